// Runs checks against a target one at a time: applicability first, then the
// check with its own scratch directory and volumes, then the verdict.

import fs from "node:fs";
import path from "node:path";
import { ConformanceError, isConformanceError } from "../errors.js";
import type { Profile } from "../profile/profile.js";
import type { CheckResult, DurationSetting } from "../report/types.js";
import type { Target } from "../target/target.js";
import { type Progress, SILENT_PROGRESS } from "../ui/progress.js";
import { type Check, type CheckContext, TIMING } from "./check.js";
import { judge, unrun } from "./judge.js";
import { checkRandom } from "./random.js";

/** Request of {@link runChecks}. */
export interface RunChecksRequest {
  target: Target;
  checks: readonly Check[];
  profile: Profile;
  duration: DurationSetting;
  /** Faults of the HA fault campaign (`--faults`). */
  faults: number;
  /** Scratch space; each check gets a subdirectory, removed after it. */
  workDir: string;
  progress?: Progress;
  signal?: AbortSignal;
  seed?: number;
  /** Called with each result as soon as it is known (the CLI streams them). */
  onResult?: (result: CheckResult) => void;
}

/** Why `check` cannot run on `target`, or null when it can. */
export function notApplicableReason(check: Check, target: Target, options: { faults: number } = { faults: 0 }): string | null {
  const skip = check.skipReason?.(options);
  if (skip) return skip;
  const missing = check.needs.filter((c) => !target.capabilities.has(c));
  if (missing.length > 0) return `target ${target.kind} lacks ${missing.join(", ")}`;
  if (check.minNodes && target.nodeIds().length < check.minNodes) {
    return `needs ${check.minNodes} nodes; target ${target.kind} has ${target.nodeIds().length}`;
  }
  return null;
}

/**
 * Runs `checks` in order and resolves with one result each. A check that
 * throws is an "error" result (never a pass); cancellation (the signal)
 * rejects with CANCELLED once the running check has cleaned up.
 */
export async function runChecks(request: RunChecksRequest): Promise<CheckResult[]> {
  const progress = request.progress ?? SILENT_PROGRESS;
  const signal = request.signal ?? new AbortController().signal;
  const seed = request.seed ?? Date.now() % 2 ** 31;
  const results: CheckResult[] = [];
  for (const [index, check] of request.checks.entries()) {
    if (signal.aborted) throw new ConformanceError({ code: "CANCELLED", message: "run interrupted" });
    progress.checkStarted(check.id, check.title, index, request.checks.length);
    const result = await runOne(check, request, progress, signal, checkRandom(seed, check.id));
    progress.checkEnded(check.id, result.verdict, result.message);
    results.push(result);
    request.onResult?.(result);
  }
  return results;
}

async function runOne(
  check: Check,
  request: RunChecksRequest,
  progress: Progress,
  signal: AbortSignal,
  random: () => number,
): Promise<CheckResult> {
  const startedAt = new Date().toISOString();
  const t0 = Date.now();
  const timing = () => ({ startedAt, durationMs: Date.now() - t0 });
  const reason = notApplicableReason(check, request.target, { faults: request.faults });
  if (reason) return unrun(check, "not-applicable", reason, timing());
  const workDir = path.join(request.workDir, check.id.replace(/[^a-z0-9.-]/g, "-"));
  fs.mkdirSync(workDir, { recursive: true });
  const volumes: string[] = [];
  const ctx: CheckContext = {
    target: request.target,
    profile: request.profile,
    duration: request.duration,
    timing: TIMING[request.duration],
    faults: request.faults,
    workDir,
    progress,
    signal,
    random,
    volumeName: (suffix) => {
      const name = `${check.id.replace(/[^a-z0-9]+/g, "-")}-${suffix}`.slice(0, 63).replace(/-+$/, "");
      volumes.push(name);
      return name;
    },
  };
  try {
    const outcome = await check.run(ctx);
    const unrecovered = await recoveryFailure(check, request.target, signal);
    if (unrecovered) return unrun(check, "error", unrecovered, timing());
    return judge(check, outcome, request.profile, timing());
  } catch (error) {
    if (signal.aborted) throw new ConformanceError({ code: "CANCELLED", message: "run interrupted", cause: error });
    const text = isConformanceError(error) ? `${error.code}: ${error.message}` : String((error as Error)?.stack ?? error);
    const unrecovered = await recoveryFailure(check, request.target, signal);
    return unrun(check, "error", unrecovered ? `${text}; ${unrecovered}` : text, timing());
  } finally {
    for (const name of volumes.reverse()) {
      await request.target.deleteVolume(name).catch(() => undefined);
    }
    fs.rmSync(workDir, { recursive: true, force: true });
  }
}

/**
 * After a check that injects faults, every node is restored and must serve
 * again before the next check starts; when one does not, the check that broke
 * it ends in error saying so (else the next check would fail for a reason that
 * is not its own). Null when the target recovered, or the check injects no faults.
 */
async function recoveryFailure(check: Check, target: Target, signal: AbortSignal): Promise<string | null> {
  if (signal.aborted || !check.needs.some((c) => c.startsWith("fault-"))) return null;
  const failed: string[] = [];
  for (const nodeId of target.nodeIds()) {
    try {
      await target.faults.restore(nodeId);
    } catch (error) {
      failed.push(`${nodeId}: ${isConformanceError(error) ? `${error.code}: ${error.message}` : String(error)}`);
    }
  }
  return failed.length === 0 ? null : `the target did not recover after the check: ${failed.join("; ")}`;
}
