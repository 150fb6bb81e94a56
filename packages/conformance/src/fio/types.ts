// The fio runner's contract (the runner is fio/runner.ts; bench/ uses it too).

import type { DataPath } from "../target/target.js";
import type { LiveSample } from "../ui/progress.js";

/** One fio job, as the suite and bench describe it (units in names; no fio syntax leaks out). */
export interface FioJobSpec {
  /** Job name; also the phase name in live samples. */
  name: string;
  rw: "read" | "write" | "randread" | "randwrite" | "randrw" | "rw";
  blockSizeBytes: number;
  iodepth: number;
  /** Parallel jobs (each its own connection on NBD). Default 1. */
  numjobs?: number;
  /** Percent reads for randrw/rw. */
  readPercent?: number;
  /** Region of the volume the job uses; default the whole volume (or 256 MiB file on a filesystem). */
  offsetBytes?: number;
  sizeBytes?: number;
  /** Time-based run of this many seconds; without it fio runs `sizeBytes` once. */
  runtimeS?: number;
  /** Seconds excluded from the figures at the start. */
  rampS?: number;
  /** Caps the rate (IOPS) the job sends; unlimited by default. */
  rateIops?: number;
  /**
   * A flush after every this many writes (fio's `fsync=N`: fsync(2) on a block device or file,
   * NBD_CMD_FLUSH on nbd), so that durability is part of the figures; none by default.
   */
  fsyncEvery?: number;
  /** Write with crc32c verify headers and verify them (fatal on mismatch). */
  verify?: boolean;
}

/** One direction's figures of a fio run. */
export interface FioSideResult {
  iops: number;
  bytesPerSec: number;
  ioBytes: number;
  /** Completion latency. */
  meanUs: number;
  maxUs: number;
  /** Ascending by percentile (fio's default list plus 99.99). */
  percentiles: { percentile: number; latencyUs: number }[];
}

/** What {@link runFio} hands back. */
export interface FioResult {
  read: FioSideResult;
  write: FioSideResult;
  /** fio's error count (non-zero on I/O errors or a verify failure). */
  errors: number;
  /** Completed IOs (read + write) per second, from the first second on (ramp included). */
  iopsPerSecond: number[];
  /** Wall time of the run. */
  durationMs: number;
  /** fio's own CPU use over its run, percent of one CPU; null where fio did not print it. */
  cpuPercent: { user: number; system: number } | null;
  /** When fio started, `Date.now()` at spawn, to line the series up with fault times. */
  startedAtMs: number;
}

/** Request of {@link runFio}. */
export interface RunFioRequest {
  dataPath: DataPath;
  job: FioJobSpec;
  /** Directory for the job file, verify state and logs (created). */
  workDir: string;
  /** Called about once a second while fio runs. */
  onSample?: (sample: LiveSample) => void;
  /** Kills fio (SIGTERM then SIGKILL) and rejects with CANCELLED. */
  signal?: AbortSignal;
  /** Reject on a non-zero fio exit (default true); false hands back what was parsed (a fault test expects errors). */
  failOnError?: boolean;
}
