// Runs one fio job: writes its job file, spawns fio with a JSON status every
// second, turns the statuses into live samples and a per-second series, and
// reads the final report into a FioResult.

import { type ChildProcess, spawn } from "node:child_process";
import fs from "node:fs/promises";
import path from "node:path";
import { ConformanceError } from "../errors.js";
import type { LiveSample } from "../ui/progress.js";
import { type FioReportView, type FioSideView, readFioReport } from "./fio-json.js";
import { fioJobFile } from "./job-file.js";
import { FioJsonSplitter } from "./json-stream.js";
import { IoTimeline, type StatusPoint } from "./timeline.js";
import type { FioResult, FioSideResult, RunFioRequest } from "./types.js";

/** After SIGTERM, fio gets this long to exit before SIGKILL (a job blocked in I/O ignores SIGTERM). */
export const FIO_KILL_GRACE_MS = 3000;
/** fio's stderr kept for error messages (the last this many characters). */
export const MAX_FIO_STDERR_CHARS = 8192;
/** How much of stderr an error message quotes. */
const STDERR_QUOTED_CHARS = 2000;
/** No status for this long means a job is blocked in I/O (fio holds its status back until the I/O returns). */
export const STATUS_OVERDUE_MS = 1500;
const STATUS_INTERVAL_MS = 1000;

/** fio processes still running, killed if this process exits first so no load outlives the suite. */
const liveChildren = new Set<ChildProcess>();
let exitHookInstalled = false;

/**
 * Runs `request.job` with fio against `request.dataPath`. Resolves with the
 * final figures; rejects with TOOL_MISSING (no fio), TOOL_FAILED (fio exited
 * non-zero, unless `failOnError` is false, or printed no report) or CANCELLED
 * (the signal fired: fio got SIGTERM, then SIGKILL after 3 s, and has exited).
 */
export async function runFio(request: RunFioRequest): Promise<FioResult> {
  const jobText = fioJobFile(request.dataPath, request.job);
  if (request.signal?.aborted) throw cancelled(request.job.name);
  await fs.mkdir(request.workDir, { recursive: true });
  const jobFile = path.join(request.workDir, `${request.job.name}.fio`);
  await fs.writeFile(jobFile, jobText);
  if (request.signal?.aborted) throw cancelled(request.job.name);
  return new FioRun(request).start(jobFile);
}

/** State of one fio process from spawn to exit. */
class FioRun {
  private readonly splitter = new FioJsonSplitter();
  /** `Date.now()` at spawn: second 0 of the series. */
  private readonly startedAtMs = Date.now();
  private readonly timeline = new IoTimeline(this.startedAtMs);
  /** The last object fio printed; after a clean exit, the final report. */
  private lastReport: FioReportView | undefined;
  /** Tail of stderr, bounded by MAX_FIO_STDERR_CHARS. */
  private stderr = "";
  /** A failure found while reading stdout (malformed JSON); reported once fio is gone. */
  private streamError: ConformanceError | undefined;
  /** When the last status arrived, for the overdue watchdog. */
  private lastStatusAtMs = 0;
  private cancelledBySignal = false;

  constructor(private readonly request: RunFioRequest) {}

  start(jobFile: string): Promise<FioResult> {
    return new Promise<FioResult>((resolve, reject) => {
      const child = spawn("fio", ["--output-format=json", `--status-interval=${STATUS_INTERVAL_MS / 1000}`, jobFile], {
        cwd: this.request.workDir,
        stdio: ["ignore", "pipe", "pipe"],
        // Its own process group: a terminal's Ctrl-C reaches the suite, which stops fio itself in order.
        detached: true,
      });
      track(child);
      const stopKilling = this.onAbort(child);
      const watchdog = setInterval(() => this.checkOverdue(), STATUS_INTERVAL_MS);
      child.stdout.setEncoding("utf8");
      child.stderr.setEncoding("utf8");
      child.stdout.on("data", (chunk: string) => this.onStdout(chunk, child));
      child.stderr.on("data", (chunk: string) => {
        this.stderr = (this.stderr + chunk).slice(-MAX_FIO_STDERR_CHARS);
      });
      let spawnError: NodeJS.ErrnoException | undefined;
      let settled = false;
      const settle = (code: number | null, signal: NodeJS.Signals | null) => {
        if (settled) return;
        settled = true;
        clearInterval(watchdog);
        stopKilling();
        liveChildren.delete(child);
        try {
          resolve(this.finish(code, signal, spawnError));
        } catch (error) {
          reject(error);
        }
      };
      child.on("error", (error: NodeJS.ErrnoException) => {
        spawnError = error;
        // No pid: fio never started, and no "close" may follow.
        if (child.pid === undefined) settle(null, null);
      });
      child.on("close", settle);
    });
  }

  /** SIGTERM on abort, SIGKILL after the grace; returns the cleanup. */
  private onAbort(child: ChildProcess): () => void {
    const signal = this.request.signal;
    let killTimer: NodeJS.Timeout | undefined;
    const abort = () => {
      this.cancelledBySignal = true;
      child.kill("SIGTERM");
      killTimer = setTimeout(() => child.kill("SIGKILL"), FIO_KILL_GRACE_MS);
    };
    signal?.addEventListener("abort", abort, { once: true });
    return () => {
      signal?.removeEventListener("abort", abort);
      if (killTimer !== undefined) clearTimeout(killTimer);
    };
  }

  private onStdout(chunk: string, child: ChildProcess): void {
    if (this.streamError !== undefined) return;
    try {
      this.splitter.push(chunk, (text) => this.onObject(text));
    } catch (error) {
      // fio's output cannot be read: stop it rather than wait out its runtime.
      this.streamError = asToolFailed(error);
      child.kill("SIGKILL");
    }
  }

  private onObject(text: string): void {
    let parsed: unknown;
    try {
      parsed = JSON.parse(text);
    } catch (error) {
      throw new ConformanceError({ code: "TOOL_FAILED", message: `fio printed malformed JSON: ${String(error)}`, cause: error });
    }
    const report = readFioReport(parsed);
    this.lastReport = report;
    this.lastStatusAtMs = Date.now();
    const figures = this.timeline.add(statusPoint(report, this.request.job.blockSizeBytes));
    this.emit({ iops: figures.iops, latencyUs: figures.latencyUs, atMs: report.timestampMs, etaS: report.etaS });
  }

  /** While fio holds its status back, a job is blocked in I/O and nothing completes: say so once a second. */
  private checkOverdue(): void {
    if (this.lastStatusAtMs === 0 || this.streamError !== undefined) return;
    const now = Date.now();
    if (now - this.lastStatusAtMs < STATUS_OVERDUE_MS) return;
    this.emit({ iops: 0, latencyUs: 0, atMs: now, etaS: undefined });
  }

  private emit(figures: { iops: number; latencyUs: number; atMs: number; etaS: number | undefined }): void {
    const onSample = this.request.onSample;
    if (onSample === undefined) return;
    const sample: LiveSample = {
      phase: this.request.job.name,
      iops: figures.iops,
      latencyUs: figures.latencyUs,
      elapsedS: Math.max(0, (figures.atMs - this.startedAtMs) / 1000),
    };
    const remainingS = this.remainingS(figures.atMs, figures.etaS);
    if (remainingS !== undefined) sample.remainingS = remainingS;
    try {
      onSample(sample);
    } catch {
      // A progress display that throws must not take the run down with it.
    }
  }

  /** Time-based runs: from the job's length and when I/O began; otherwise fio's own estimate. */
  private remainingS(atMs: number, etaS: number | undefined): number | undefined {
    const job = this.request.job;
    if (job.runtimeS === undefined) return etaS;
    const ioStartedAtMs = this.timeline.ioStartedAtMs() ?? atMs;
    return Math.max(0, job.runtimeS + (job.rampS ?? 0) - (atMs - ioStartedAtMs) / 1000);
  }

  private finish(code: number | null, signal: NodeJS.Signals | null, spawnError: NodeJS.ErrnoException | undefined): FioResult {
    const name = this.request.job.name;
    if (spawnError?.code === "ENOENT") {
      throw new ConformanceError({
        code: "TOOL_MISSING",
        message: "fio is not installed or not on PATH (apt-get install fio)",
        cause: spawnError,
      });
    }
    if (spawnError !== undefined) {
      throw new ConformanceError({ code: "TOOL_FAILED", message: `fio ${name}: ${spawnError.message}`, cause: spawnError });
    }
    if (this.cancelledBySignal) throw cancelled(name);
    if (this.streamError !== undefined) throw this.streamError;
    try {
      this.splitter.end((text) => this.onObject(text));
    } catch (error) {
      throw asToolFailed(error);
    }
    const failed = code !== 0;
    if (failed && this.request.failOnError !== false) throw this.toolFailed(code, signal);
    if (this.lastReport === undefined) throw this.toolFailed(code, signal, "printed no JSON report");
    return this.result(this.lastReport);
  }

  private result(report: FioReportView): FioResult {
    return {
      read: sideResult(report.read),
      write: sideResult(report.write),
      // fio prints total_err only under continue_on_error; otherwise it stops at its first error.
      errors: report.totalErrors ?? (report.error !== 0 ? 1 : 0),
      iopsPerSecond: this.timeline.perSecond(),
      durationMs: Date.now() - this.startedAtMs,
      startedAtMs: this.startedAtMs,
      cpuPercent: report.cpuPercent ?? null,
    };
  }

  private toolFailed(code: number | null, signal: NodeJS.Signals | null, what?: string): ConformanceError {
    const how = what ?? (signal !== null ? `was killed by ${signal}` : `exited with code ${code}`);
    const tail = (this.stderr.trim() || this.splitter.noise().trim()).slice(-STDERR_QUOTED_CHARS);
    return new ConformanceError({
      code: "TOOL_FAILED",
      message: `fio ${this.request.job.name} ${how}${tail ? `: ${tail}` : " (no output on stderr)"}`,
    });
  }
}

/** The timeline's view of one fio object: completions counted from bytes (io_bytes counts completions, total_ios issues). */
function statusPoint(report: FioReportView, blockSizeBytes: number): StatusPoint {
  const { read, write } = report;
  return {
    emittedAtMs: report.timestampMs,
    runtimeMs: Math.max(read.runtimeMs, write.runtimeMs),
    completedIos: (read.ioBytes + write.ioBytes) / blockSizeBytes,
    clatCount: read.clatCount + write.clatCount,
    clatSumNs: read.clatMeanNs * read.clatCount + write.clatMeanNs * write.clatCount,
  };
}

function sideResult(side: FioSideView): FioSideResult {
  const percentiles = Object.entries(side.clatPercentilesNs)
    .map(([key, ns]) => ({ percentile: Number(key), latencyUs: ns / 1000 }))
    .filter((p) => Number.isFinite(p.percentile))
    .sort((a, b) => a.percentile - b.percentile);
  return {
    iops: side.iops,
    bytesPerSec: side.bytesPerSec,
    ioBytes: side.ioBytes,
    meanUs: side.clatMeanNs / 1000,
    maxUs: side.clatMaxNs / 1000,
    percentiles,
  };
}

function cancelled(jobName: string): ConformanceError {
  return new ConformanceError({ code: "CANCELLED", message: `fio ${jobName} was cancelled` });
}

function asToolFailed(error: unknown): ConformanceError {
  if (error instanceof ConformanceError) return error;
  return new ConformanceError({ code: "TOOL_FAILED", message: `reading fio's output failed: ${String(error)}`, cause: error });
}

function track(child: ChildProcess): void {
  liveChildren.add(child);
  if (exitHookInstalled) return;
  exitHookInstalled = true;
  process.on("exit", () => {
    for (const c of liveChildren) c.kill("SIGKILL");
  });
}
