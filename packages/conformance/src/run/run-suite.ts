// One conformance run: bring the target up, run the chosen families, tear it
// all down (also on failure and on cancel), write the report.

import fs from "node:fs";
import os from "node:os";
import path from "node:path";
import type { Check } from "../checks/check.js";
import { ALL_CHECKS, checksOf, DEFAULT_THRESHOLDS } from "../checks/registry.js";
import { runChecks } from "../checks/runner.js";
import { ConformanceError } from "../errors.js";
import { loadProfile } from "../profile/load.js";
import type { CheckResult, DurationSetting, Family, Report } from "../report/types.js";
import { REPORT_SCHEMA_VERSION } from "../report/types.js";
import { writeReport } from "../report/write.js";
import { type CreateTargetOptions, createTarget, type TargetKind } from "../target/create.js";
import type { Target } from "../target/target.js";
import type { Progress } from "../ui/progress.js";
import { environment } from "./environment.js";

/** Options of {@link runSuite}. */
export interface SuiteOptions {
  target: TargetKind;
  nodes: number;
  suites: Family[];
  /** Report folder (created). */
  out: string;
  duration: DurationSetting;
  profilePath?: string;
  faults: number;
  seed: number;
  progress: Progress;
  signal: AbortSignal;
  isolation?: "netns" | "loopback";
  /** The `csi` target's driver socket, parameters and faults script. */
  csi?: CreateTargetOptions["csi"];
  /** Only these check ids (default: every check of `suites`). */
  only?: string[];
  /** Wraps the target before checks see it (the negative tests break it on purpose). */
  wrapTarget?: (target: Target) => Target;
}

/** What {@link runSuite} hands back. */
export interface SuiteResult {
  report: Report;
  paths: { jsonPath: string; htmlPath: string; junitPath: string };
}

function summarize(checks: CheckResult[]): Report["summary"] {
  const count = (v: CheckResult["verdict"]) => checks.filter((c) => c.verdict === v).length;
  return { pass: count("pass"), fail: count("fail"), notApplicable: count("not-applicable"), error: count("error") };
}

function selectChecks(options: SuiteOptions): Check[] {
  const checks = checksOf(options.suites);
  if (!options.only) return checks;
  const selected = checks.filter((c) => options.only?.includes(c.id));
  const unknown = options.only.filter((id) => !ALL_CHECKS.some((c) => c.id === id));
  if (unknown.length > 0) {
    throw new ConformanceError({
      code: "INVALID_ARGUMENT",
      message: `unknown check ${unknown.join(", ")}; valid: ${ALL_CHECKS.map((c) => c.id).join(", ")}`,
    });
  }
  if (selected.length === 0) {
    throw new ConformanceError({
      code: "INVALID_ARGUMENT",
      message: `--check ${options.only.join(",")} selects no check of --suite ${options.suites.join(",")}`,
    });
  }
  return selected;
}

/**
 * Runs the suite end to end. The target is closed before this resolves or
 * rejects, whatever happened; CANCELLED when the signal fired.
 */
export async function runSuite(options: SuiteOptions): Promise<SuiteResult> {
  const profile = loadProfile(
    options.profilePath,
    DEFAULT_THRESHOLDS as Record<string, Record<string, { min?: number; max?: number }>>,
    ALL_CHECKS.map((c) => c.id),
  );
  const checks = selectChecks(options);
  const startedAt = new Date().toISOString();
  const scratch = fs.mkdtempSync(path.join(os.tmpdir(), "keelson-conformance-"));
  let target: Target | null = null;
  let outcome: { ok: true; result: SuiteResult } | { ok: false; error: unknown };
  try {
    outcome = { ok: true, result: await runWith(options, checks, profile, startedAt, scratch, (t) => (target = t)) };
  } catch (error) {
    outcome = { ok: false, error };
  }
  // Teardown runs whatever happened; its failure never hides the run's own outcome, and is never silent.
  options.progress.step("tearing the target down");
  let teardown: unknown = null;
  try {
    await (target as Target | null)?.close();
  } catch (error) {
    teardown = error;
  } finally {
    fs.rmSync(scratch, { recursive: true, force: true });
  }
  if (!outcome.ok) throw outcome.error;
  if (teardown !== null) {
    throw new ConformanceError({
      code: "TARGET_FAILED",
      message: `the run finished (report: ${outcome.result.paths.htmlPath}) but ${(teardown as Error).message}`,
      cause: teardown,
    });
  }
  return outcome.result;
}

/** The run itself, between bringing the target up and tearing it down; hands the target out as soon as it exists. */
async function runWith(
  options: SuiteOptions,
  checks: Check[],
  profile: ReturnType<typeof loadProfile>,
  startedAt: string,
  scratch: string,
  onTarget: (target: Target) => void,
): Promise<SuiteResult> {
  options.progress.step(
    options.target === "csi"
      ? `connecting to the CSI driver at ${options.csi?.endpoint}`
      : `starting the ${options.target} target (${options.nodes} nodes)`,
  );
  const made = await createTarget({
    kind: options.target,
    nodes: options.nodes,
    dir: path.join(scratch, "target"),
    ...(options.isolation ? { isolation: options.isolation } : {}),
    ...(options.csi ? { csi: options.csi } : {}),
  });
  onTarget(made);
  if (options.signal.aborted) throw new ConformanceError({ code: "CANCELLED", message: "run interrupted" });
  const checked = options.wrapTarget ? options.wrapTarget(made) : made;
  const results = await runChecks({
    target: checked,
    checks,
    profile,
    duration: options.duration,
    faults: options.faults,
    workDir: path.join(scratch, "checks"),
    progress: options.progress,
    signal: options.signal,
    seed: options.seed,
  });
  const report: Report = {
    schemaVersion: REPORT_SCHEMA_VERSION,
    startedAt,
    finishedAt: new Date().toISOString(),
    environment: environment(made, options.duration),
    options: {
      suites: options.suites,
      faults: options.faults,
      nodes: options.nodes,
      profileName: profile.name,
      profilePath: profile.path,
      checks: options.only ?? [],
      seed: options.seed,
    },
    summary: summarize(results),
    checks: results,
  };
  const paths = writeReport(options.out, report);
  // A failed or broken check is explained by the target's own logs; they go with the report (the target's directory does not survive close()).
  if (report.summary.fail + report.summary.error > 0) await made.collectLogs(path.join(options.out, "logs")).catch(() => []);
  return { report, paths };
}
