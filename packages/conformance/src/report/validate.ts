// Reports cross process and version boundaries (the CLI's `report` and
// `compare` read files other runs wrote), so every report is validated
// against schema/report.schema.json at that edge, never cast.

import { readFileSync } from "node:fs";
import { Ajv, type ErrorObject, type ValidateFunction } from "ajv";
import { ConformanceError } from "../errors.js";
import { REPORT_SCHEMA_VERSION, type Report } from "./types.js";

/**
 * The schema file, found relative to this module: `src/report/` and
 * `dist/report/` are both two levels below the package root, and the package
 * ships `schema/`.
 */
export const REPORT_SCHEMA_URL = new URL("../../schema/report.schema.json", import.meta.url);

/** How many ajv errors a SCHEMA_INVALID message lists; the rest are counted. */
const MAX_LISTED_ERRORS = 5;

/** Compiled on first use and kept: compiling costs milliseconds, validating microseconds. */
let compiled: ValidateFunction<Report> | undefined;

function validator(): ValidateFunction<Report> {
  if (compiled === undefined) {
    const schema: unknown = JSON.parse(readFileSync(REPORT_SCHEMA_URL, "utf8"));
    // allErrors so that a message can name several problems at once; strict
    // catches typos in the schema itself (an unknown keyword fails compiling).
    const ajv = new Ajv({ allErrors: true, strict: true });
    compiled = ajv.compile<Report>(schema as object);
  }
  return compiled;
}

function describeError(error: ErrorObject): string {
  const at = error.instancePath === "" ? "(root)" : error.instancePath;
  const params = error.params as Record<string, unknown>;
  if (error.keyword === "enum" && Array.isArray(params.allowedValues)) {
    return `${at} must be one of ${params.allowedValues.map((v) => JSON.stringify(v)).join(", ")}`;
  }
  if (error.keyword === "additionalProperties" && typeof params.additionalProperty === "string") {
    return `${at} has unknown property ${JSON.stringify(params.additionalProperty)}`;
  }
  if (error.keyword === "const" && "allowedValue" in params) {
    return `${at} must be ${JSON.stringify(params.allowedValue)}`;
  }
  return `${at} ${error.message ?? `fails ${error.keyword}`}`;
}

function schemaVersionOf(value: unknown): unknown {
  return typeof value === "object" && value !== null && "schemaVersion" in value ? value.schemaVersion : undefined;
}

/**
 * Checks that `value` is a {@link Report} and returns it typed. Pure: does not
 * copy or change `value`.
 *
 * @param source where the value came from (a path), for the error message.
 * @throws ConformanceError SCHEMA_INVALID listing the first few problems with
 *   their JSON paths; a report of another schema version says so first.
 */
export function validateReport(value: unknown, source = "report"): Report {
  const validate = validator();
  if (validate(value)) return value;
  const version = schemaVersionOf(value);
  if (typeof version === "number" && version !== REPORT_SCHEMA_VERSION) {
    throw new ConformanceError({
      code: "SCHEMA_INVALID",
      message: `${source} has schemaVersion ${version}; this suite reads schemaVersion ${REPORT_SCHEMA_VERSION} only`,
    });
  }
  const errors = validate.errors ?? [];
  const listed = errors.slice(0, MAX_LISTED_ERRORS).map(describeError);
  const more = errors.length > MAX_LISTED_ERRORS ? `; and ${errors.length - MAX_LISTED_ERRORS} more` : "";
  throw new ConformanceError({
    code: "SCHEMA_INVALID",
    message: `${source} does not validate against schema/report.schema.json: ${listed.join("; ")}${more}`,
  });
}

/**
 * Reads, parses and validates a report.json.
 *
 * @throws ConformanceError INVALID_ARGUMENT when the file cannot be read or is
 *   not JSON (the message names the path); SCHEMA_INVALID when it is JSON but
 *   not a report.
 */
export function readReport(path: string): Report {
  let text: string;
  try {
    text = readFileSync(path, "utf8");
  } catch (cause) {
    const reason = (cause as NodeJS.ErrnoException).code === "ENOENT" ? "does not exist" : "cannot be read";
    throw new ConformanceError({ code: "INVALID_ARGUMENT", message: `report ${path} ${reason}`, cause });
  }
  let parsed: unknown;
  try {
    parsed = JSON.parse(text);
  } catch (cause) {
    throw new ConformanceError({
      code: "INVALID_ARGUMENT",
      message: `report ${path} is not JSON: ${(cause as Error).message}`,
      cause,
    });
  }
  return validateReport(parsed, path);
}
