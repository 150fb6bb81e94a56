// A stand-in for fio in unit tests of check logic: each job, by name, runs
// for a while and reports a rate, or fails; it honours the stop signal a
// check passes, and says which jobs are still running.

import { ConformanceError } from "../../errors.js";
import type { FioJobSpec, FioResult, FioSideResult } from "../../fio/types.js";
import type { DataPath } from "../../target/target.js";
import type { CheckContext } from "../check.js";

/** What one fake job does. */
export interface FakeJob {
  /** How long it runs. Default 5 ms. */
  runMs?: number;
  /** Rejects with TOOL_FAILED after this long instead of finishing. */
  failAfterMs?: number;
  /** IOPS it reports (split evenly between reads and writes for a mixed job). Default 1000. */
  iops?: number;
}

/** A fio result of `iops` IOs a second of 4 KiB, reads or writes as `job.rw` says. */
export function fakeFioResult(job: FioJobSpec, iops: number, startedAtMs: number): FioResult {
  const side = (share: number): FioSideResult => ({
    iops: iops * share,
    bytesPerSec: iops * share * job.blockSizeBytes,
    ioBytes: iops * share * job.blockSizeBytes,
    meanUs: 100,
    maxUs: 400,
    percentiles: share === 0 ? [] : [50, 99, 99.9].map((percentile) => ({ percentile, latencyUs: 100 + percentile })),
  });
  const reads = job.rw === "randrw" || job.rw === "rw" ? (job.readPercent ?? 50) / 100 : /read/.test(job.rw) ? 1 : 0;
  const seconds = (job.runtimeS ?? 1) + (job.rampS ?? 0);
  return {
    read: side(reads),
    write: side(1 - reads),
    errors: 0,
    iopsPerSecond: Array.from({ length: seconds }, () => iops),
    durationMs: seconds * 1000,
    startedAtMs,
    cpuPercent: null,
  };
}

/** `runLoad` without fio: jobs behave as {@link FakeFio.jobs} says. */
export class FakeFio {
  /** What each job name does; a name not here runs 5 ms at 1000 IOPS. */
  readonly jobs = new Map<string, FakeJob>();
  /** Names of the jobs started and not yet settled. */
  readonly running = new Set<string>();
  /** Every job started, in order. */
  readonly started: FioJobSpec[] = [];
  /** Names of the jobs that ended because their stop signal fired, in order. */
  readonly cancelled: string[] = [];

  readonly runLoad = (_ctx: CheckContext, _dataPath: DataPath, job: FioJobSpec, stop?: AbortSignal): Promise<FioResult> => {
    const plan = this.jobs.get(job.name) ?? {};
    const startedAtMs = Date.now();
    this.started.push(job);
    this.running.add(job.name);
    return new Promise<FioResult>((resolve, reject) => {
      let done = false;
      const end = (settle: () => void) => {
        if (done) return;
        done = true;
        clearTimeout(timer);
        this.running.delete(job.name);
        settle();
      };
      const fail = (code: "TOOL_FAILED" | "CANCELLED", what: string) =>
        end(() => reject(new ConformanceError({ code, message: `fio ${job.name} ${what}` })));
      const timer =
        plan.failAfterMs !== undefined
          ? setTimeout(() => fail("TOOL_FAILED", "failed"), plan.failAfterMs)
          : setTimeout(() => end(() => resolve(fakeFioResult(job, plan.iops ?? 1000, startedAtMs))), plan.runMs ?? 5);
      stop?.addEventListener(
        "abort",
        () => {
          if (!done) this.cancelled.push(job.name);
          fail("CANCELLED", "was cancelled");
        },
        { once: true },
      );
    });
  };

  reset(): void {
    this.jobs.clear();
    this.running.clear();
    this.started.length = 0;
    this.cancelled.length = 0;
  }
}
