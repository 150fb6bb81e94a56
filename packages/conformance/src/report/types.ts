// The report: one versioned shape (schema/report.schema.json mirrors it);
// report.json, JUnit, HTML and the terminal table are renderings of it.

/** Bumped on any incompatible change of {@link Report}; readers refuse other versions. */
export const REPORT_SCHEMA_VERSION = 1;

export type Family = "ha" | "qos" | "latency" | "snapshot";
export const FAMILIES: readonly Family[] = ["ha", "qos", "latency", "snapshot"];

/** Which way a figure is better; `compare` reads it to call a change a regression. */
export type Better = "higher" | "lower" | "none";

/** A bound from the profile: the figure must be at least `min` and/or at most `max`. */
export interface Threshold {
  min?: number;
  max?: number;
}

/** One measured number with its unit, and the bound it was judged by. */
export interface Figure {
  /** Stable key within its check, units in the name: `stallMs`, `lostWrites`, `iopsRatio`. */
  name: string;
  value: number;
  /** "ms", "IOPS", "MiB/s", "us", "ratio", "count", "bytes". */
  unit: string;
  better: Better;
  /** The profile's bound, when the figure is judged. */
  threshold?: Threshold;
  /** Derived: "pass" when within `threshold`, "fail" when not, "info" when unjudged. */
  verdict: "pass" | "fail" | "info";
  /** A sentence on what it is ("writes acknowledged then not read back"). */
  description?: string;
}

/** A per-second (or per-interval) series, with events marked on it. */
export interface TimeSeries {
  name: string;
  unit: string;
  /** Milliseconds between points. */
  intervalMs: number;
  /** `points[i]` covers `[i * intervalMs, (i + 1) * intervalMs)` from the series' start. */
  points: number[];
  /** Faults and recoveries, in ms from the series' start. */
  marks: { atMs: number; label: string; kind: "fault" | "recovered" | "info" }[];
  /** Stalls (no I/O completed) found in the series, ms from its start. */
  stalls: { fromMs: number; toMs: number }[];
}

/** Completion-latency percentiles of one fio run. */
export interface LatencyCurve {
  /** Bench profile name: "randread-4k-qd1", "mixed-70-30-4k-qd1". */
  profile: string;
  replicas: number;
  iops: number;
  mibPerSec: number;
  /** Ascending by percentile: 1, 5, 10, 20, 30, 40, 50, 60, 70, 80, 90, 95, 99, 99.5, 99.9, 99.95, 99.99. */
  percentiles: { percentile: number; latencyUs: number }[];
}

/** pass: every judged figure within bounds; fail: one is not (or an invariant broke); not-applicable: the target lacks a capability; error: the check could not run. */
export type Verdict = "pass" | "fail" | "not-applicable" | "error";

/** One check's outcome. */
export interface CheckResult {
  /** `family.name`, e.g. "ha.replica-loss". */
  id: string;
  family: Family;
  title: string;
  verdict: Verdict;
  /** Why: for fail, what was expected and what was measured; for not-applicable, the missing capability; for error, the error. */
  message: string;
  figures: Figure[];
  series: TimeSeries[];
  latency: LatencyCurve[];
  /** The check's context notes (`CheckOutcome.notes`), shown under its figures; optional so older reports still read. */
  notes?: string[];
  startedAt: string;
  durationMs: number;
  /** Set by the CI test's expectations: a failure the named issue will fix. */
  knownFailure?: { issue: string; reason: string };
}

/** Facts of where and how the run happened. */
export interface Environment {
  kernel: string;
  cpuCount: number;
  cpuModel: string;
  memoryBytes: number;
  fioVersion: string;
  nodeVersion: string;
  suiteVersion: string;
  gitCommit: string;
  target: string;
  targetDescription: Record<string, string>;
  duration: DurationSetting;
  root: boolean;
}

export type DurationSetting = "short" | "standard" | "long";

/** A whole run. */
export interface Report {
  schemaVersion: typeof REPORT_SCHEMA_VERSION;
  startedAt: string;
  finishedAt: string;
  environment: Environment;
  options: {
    suites: Family[];
    /** The `--check` filter; empty when every check of `suites` ran. */
    checks: string[];
    faults: number;
    nodes: number;
    /** `--seed`: the same seed replays each check's random choices. */
    seed: number;
    profileName: string;
    profilePath: string;
  };
  summary: { pass: number; fail: number; notApplicable: number; error: number };
  checks: CheckResult[];
}
