// Reads one object of fio's JSON output (a status or the final report) into
// the few figures the runner uses, checking each field at this edge: fio's
// output is input from another process, never cast.

import { ConformanceError } from "../errors.js";

/** One direction (read or write) of one fio JSON object, in fio's own units. */
export interface FioSideView {
  /** Completed bytes since the stats were last reset (start, or the end of ramp_time). */
  ioBytes: number;
  /** Milliseconds since the stats were last reset, taken when fio snapshotted the status; 0 before the first completion. */
  runtimeMs: number;
  iops: number;
  bytesPerSec: number;
  /** Completion-latency samples (none are taken during ramp_time). */
  clatCount: number;
  clatMeanNs: number;
  clatMaxNs: number;
  /** fio's percentile table: "99.900000" -> ns. */
  clatPercentilesNs: Readonly<Record<string, number>>;
}

/** The figures of one fio JSON object (with group_reporting: its one job group). */
export interface FioReportView {
  /** Wall-clock ms when fio printed the object (after any wait for blocked jobs). */
  timestampMs: number;
  read: FioSideView;
  write: FioSideView;
  /** errno of the group's first error, 0 when none. */
  error: number;
  /** Errors counted under continue_on_error; absent otherwise. */
  totalErrors: number | undefined;
  /** fio's estimate of seconds left; absent when fio does not know. */
  etaS: number | undefined;
  /** fio's own CPU use over the job's runtime, percent of one CPU (user, system); absent when not printed. */
  cpuPercent: { user: number; system: number } | undefined;
}

/** fio prints INT_MAX as the eta it cannot estimate yet. */
const ETA_UNKNOWN = 2_147_483_647;

/** Reads a parsed fio JSON object; TOOL_FAILED naming the field when it is not what fio 3.x prints. */
export function readFioReport(value: unknown): FioReportView {
  const root = record(value, "");
  const jobs = root.jobs;
  if (!Array.isArray(jobs) || jobs.length !== 1) {
    bad("jobs", "is not a list of exactly one job group (group_reporting=1)");
  }
  const job = record(jobs[0], "jobs[0]");
  const eta = optionalNumber(job, "eta", "jobs[0]");
  return {
    timestampMs: number(root, "timestamp_ms", ""),
    read: readSide(job, "read"),
    write: readSide(job, "write"),
    error: number(job, "error", "jobs[0]"),
    totalErrors: optionalNumber(job, "total_err", "jobs[0]"),
    etaS: eta === undefined || eta < 0 || eta >= ETA_UNKNOWN ? undefined : eta,
    cpuPercent: cpuOf(job),
  };
}

function cpuOf(job: Record<string, unknown>): { user: number; system: number } | undefined {
  const user = optionalNumber(job, "usr_cpu", "jobs[0]");
  const system = optionalNumber(job, "sys_cpu", "jobs[0]");
  return user === undefined || system === undefined ? undefined : { user, system };
}

function readSide(job: Record<string, unknown>, side: "read" | "write"): FioSideView {
  const at = `jobs[0].${side}`;
  const s = record(job[side], at);
  const clat = record(s.clat_ns, `${at}.clat_ns`);
  const percentiles: Record<string, number> = {};
  if (clat.percentile !== undefined) {
    const table = record(clat.percentile, `${at}.clat_ns.percentile`);
    for (const key of Object.keys(table)) percentiles[key] = number(table, key, `${at}.clat_ns.percentile`);
  }
  return {
    ioBytes: number(s, "io_bytes", at),
    runtimeMs: number(s, "runtime", at),
    iops: number(s, "iops", at),
    bytesPerSec: number(s, "bw_bytes", at),
    clatCount: number(clat, "N", `${at}.clat_ns`),
    clatMeanNs: number(clat, "mean", `${at}.clat_ns`),
    clatMaxNs: number(clat, "max", `${at}.clat_ns`),
    clatPercentilesNs: percentiles,
  };
}

function record(value: unknown, at: string): Record<string, unknown> {
  if (typeof value !== "object" || value === null || Array.isArray(value)) bad(at || "(root)", "is not an object");
  return value as Record<string, unknown>;
}

function number(obj: Record<string, unknown>, key: string, at: string): number {
  const v = obj[key];
  if (typeof v !== "number" || !Number.isFinite(v)) bad(at ? `${at}.${key}` : key, `is ${JSON.stringify(v)}, not a number`);
  return v;
}

function optionalNumber(obj: Record<string, unknown>, key: string, at: string): number | undefined {
  return obj[key] === undefined ? undefined : number(obj, key, at);
}

function bad(field: string, what: string): never {
  throw new ConformanceError({ code: "TOOL_FAILED", message: `fio JSON output: ${field} ${what}` });
}
