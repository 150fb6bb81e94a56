// How checks report what they are doing; the CLI renders it live on a TTY and
// as plain lines otherwise.

/** A live figure of a running fio phase (once a second). */
export interface LiveSample {
  /** What is running ("randread-4k-qd32", "ledger writer"). */
  phase: string;
  iops: number;
  /** Mean completion latency over the last interval, microseconds. */
  latencyUs: number;
  elapsedS: number;
  /** Seconds left of the phase, when known. */
  remainingS?: number;
}

/** What checks call; every method is cheap and never throws. */
export interface Progress {
  /** A check starts (`index` of `total`). */
  checkStarted(id: string, title: string, index: number, total: number): void;
  /** A step inside the running check ("killing node2", "rebuilding"). */
  step(text: string): void;
  /** A live sample of the running load. */
  sample(sample: LiveSample): void;
  /** A check ended. */
  checkEnded(id: string, verdict: string, summary: string): void;
}

/** A Progress that discards everything (tests, library use). */
export const SILENT_PROGRESS: Progress = {
  checkStarted: () => undefined,
  step: () => undefined,
  sample: () => undefined,
  checkEnded: () => undefined,
};
