// Reads a profile file (YAML or JSON) at the edge: every field checked, every
// unknown check or figure named with the valid ones, defaults filled in.

import fs from "node:fs";
import YAML from "yaml";
import { ConformanceError } from "../errors.js";
import type { Threshold } from "../report/types.js";
import type { Profile } from "./profile.js";

type Thresholds = Record<string, Record<string, Threshold>>;

function invalid(path: string, message: string): ConformanceError {
  return new ConformanceError({ code: "INVALID_ARGUMENT", message: `profile ${path}: ${message}` });
}

function isRecord(value: unknown): value is Record<string, unknown> {
  return typeof value === "object" && value !== null && !Array.isArray(value);
}

function parseThreshold(value: unknown, where: string, file: string): Threshold {
  if (!isRecord(value)) throw invalid(file, `${where} must be { min?: number, max?: number }, got ${JSON.stringify(value)}`);
  const t: Threshold = {};
  for (const [k, v] of Object.entries(value)) {
    if (k !== "min" && k !== "max") throw invalid(file, `${where}.${k} is not a bound; valid: min, max`);
    if (typeof v !== "number" || !Number.isFinite(v))
      throw invalid(file, `${where}.${k} must be a number, got ${JSON.stringify(v)}`);
    t[k] = v;
  }
  if (t.min === undefined && t.max === undefined) throw invalid(file, `${where} has neither min nor max`);
  if (t.min !== undefined && t.max !== undefined && t.min > t.max) throw invalid(file, `${where}: min ${t.min} > max ${t.max}`);
  return t;
}

/**
 * Validates a parsed profile document against the known checks; bounds it
 * does not set keep `defaults`' values (a profile overrides figure by figure).
 */
export function parseProfile(doc: unknown, file: string, defaults: Thresholds, knownChecks: readonly string[]): Profile {
  if (!isRecord(doc)) throw invalid(file, "must be a mapping with `name` and `thresholds`");
  for (const k of Object.keys(doc)) {
    if (k !== "name" && k !== "thresholds" && k !== "knownFailures") {
      throw invalid(file, `unknown key ${k}; valid: name, thresholds, knownFailures`);
    }
  }
  const name = doc.name ?? "custom";
  if (typeof name !== "string" || name.length === 0) throw invalid(file, "name must be a non-empty string");
  const merged: Thresholds = structuredClone(defaults);
  const given = doc.thresholds ?? {};
  if (!isRecord(given)) throw invalid(file, "thresholds must map check ids to figures");
  for (const [checkId, figures] of Object.entries(given)) {
    if (!knownChecks.includes(checkId)) {
      throw invalid(file, `unknown check ${checkId}; valid: ${knownChecks.join(", ")}`);
    }
    if (!isRecord(figures)) throw invalid(file, `thresholds.${checkId} must map figure names to bounds`);
    const into: Record<string, Threshold> = merged[checkId] ?? {};
    merged[checkId] = into;
    for (const [figure, bound] of Object.entries(figures)) {
      into[figure] = parseThreshold(bound, `thresholds.${checkId}.${figure}`, file);
    }
  }
  return { name, path: file, thresholds: merged, knownFailures: parseKnownFailures(doc.knownFailures ?? {}, file, knownChecks) };
}

function parseKnownFailures(
  value: unknown,
  file: string,
  knownChecks: readonly string[],
): Record<string, { issue: string; reason: string }> {
  if (!isRecord(value)) throw invalid(file, "knownFailures must map check ids to { issue, reason }");
  const out: Record<string, { issue: string; reason: string }> = {};
  for (const [checkId, entry] of Object.entries(value)) {
    if (!knownChecks.includes(checkId))
      throw invalid(file, `knownFailures: unknown check ${checkId}; valid: ${knownChecks.join(", ")}`);
    if (
      !isRecord(entry) ||
      typeof entry.issue !== "string" ||
      !entry.issue ||
      typeof entry.reason !== "string" ||
      !entry.reason
    ) {
      throw invalid(file, `knownFailures.${checkId} must be { issue: string, reason: string }, got ${JSON.stringify(entry)}`);
    }
    for (const k of Object.keys(entry)) {
      if (k !== "issue" && k !== "reason") throw invalid(file, `knownFailures.${checkId}.${k} is unknown; valid: issue, reason`);
    }
    out[checkId] = { issue: entry.issue, reason: entry.reason };
  }
  return out;
}

/** The profile in `file` (YAML or JSON), or the built-in default when `file` is undefined. */
export function loadProfile(file: string | undefined, defaults: Thresholds, knownChecks: readonly string[]): Profile {
  if (file === undefined) return { name: "default", path: "", thresholds: structuredClone(defaults), knownFailures: {} };
  let text: string;
  try {
    text = fs.readFileSync(file, "utf8");
  } catch (error) {
    throw new ConformanceError({
      code: "INVALID_ARGUMENT",
      message: `profile ${file}: ${(error as Error).message}`,
      cause: error,
    });
  }
  let doc: unknown;
  try {
    doc = YAML.parse(text);
  } catch (error) {
    throw invalid(file, `not YAML or JSON: ${(error as Error).message}`);
  }
  return parseProfile(doc, file, defaults, knownChecks);
}

/** The default profile as YAML, for vendors to copy and edit (`keelson-conformance profile`). */
export function profileToYaml(profile: Profile): string {
  const known = Object.keys(profile.knownFailures ?? {}).length > 0 ? { knownFailures: profile.knownFailures } : {};
  return YAML.stringify({ name: profile.name, thresholds: profile.thresholds, ...known });
}
