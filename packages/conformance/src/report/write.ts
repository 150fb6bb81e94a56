// Writing a run's report directory: report.json plus its HTML and JUnit
// renderings. A report that does not validate is never written, and each file
// appears whole or not at all (temp file + rename in the same directory).

import { randomBytes } from "node:crypto";
import { mkdirSync, renameSync, rmSync, writeFileSync } from "node:fs";
import { join } from "node:path";
import { ConformanceError } from "../errors.js";
import { renderHtml } from "./html.js";
import { renderJunit } from "./junit.js";
import type { Report } from "./types.js";
import { readReport, validateReport } from "./validate.js";

export const REPORT_JSON = "report.json";
export const REPORT_HTML = "report.html";
export const REPORT_JUNIT = "junit.xml";

/** Where {@link writeReport} and {@link reRender} put the files. */
export interface ReportPaths {
  jsonPath: string;
  htmlPath: string;
  junitPath: string;
}

function pathsIn(dir: string): ReportPaths {
  return { jsonPath: join(dir, REPORT_JSON), htmlPath: join(dir, REPORT_HTML), junitPath: join(dir, REPORT_JUNIT) };
}

/** Writes `text` to `path` through a sibling temp file and rename(2), so readers never see half a file. */
function writeAtomic(path: string, text: string): void {
  const tmp = `${path}.tmp-${process.pid}-${randomBytes(4).toString("hex")}`;
  try {
    writeFileSync(tmp, text, "utf8");
    renameSync(tmp, path);
  } catch (cause) {
    rmSync(tmp, { force: true });
    throw new ConformanceError({ code: "INTERNAL", message: `cannot write ${path}: ${(cause as Error).message}`, cause });
  }
}

function writeRenderings(paths: ReportPaths, report: Report): void {
  writeAtomic(paths.htmlPath, renderHtml(report));
  writeAtomic(paths.junitPath, renderJunit(report));
}

/**
 * Validates `report` and writes report.json (2-space JSON), report.html and
 * junit.xml into `dir`, creating it. Overwrites a previous report there.
 * report.json is written last, so its presence means the renderings are there.
 *
 * The value validated is the JSON text parsed back, so that what JSON cannot
 * hold (NaN and Infinity become null, undefined entries vanish) fails here
 * rather than in a later reader.
 *
 * @throws ConformanceError SCHEMA_INVALID before anything is written when the
 *   report does not validate; INTERNAL when a file cannot be written.
 */
export function writeReport(dir: string, report: Report): ReportPaths {
  const json = `${JSON.stringify(report, null, 2)}\n`;
  const checked = validateReport(JSON.parse(json), "report to write");
  const paths = pathsIn(dir);
  try {
    mkdirSync(dir, { recursive: true });
  } catch (cause) {
    throw new ConformanceError({
      code: "INVALID_ARGUMENT",
      message: `cannot create report directory ${dir}: ${(cause as Error).message}`,
      cause,
    });
  }
  writeRenderings(paths, checked);
  writeAtomic(paths.jsonPath, json);
  return paths;
}

/**
 * Re-renders report.html and junit.xml from `dir/report.json` (the CLI's
 * `report DIR`), e.g. after the renderers changed. Leaves report.json as it is.
 *
 * @throws ConformanceError INVALID_ARGUMENT when DIR/report.json is missing or
 *   not JSON; SCHEMA_INVALID when it does not validate (nothing is rewritten).
 */
export function reRender(dir: string): ReportPaths {
  const paths = pathsIn(dir);
  writeRenderings(paths, readReport(paths.jsonPath));
  return paths;
}
