// What a check is and what it is given. Checks measure figures; the verdict
// is derived from the figures and the profile's thresholds (see judge.ts).

import type { Profile } from "../profile/profile.js";
import type { DurationSetting, Family, Figure, LatencyCurve, TimeSeries } from "../report/types.js";
import type { Capability, Target } from "../target/target.js";
import type { Progress } from "../ui/progress.js";

/** A figure as a check measures it; the runner adds the threshold and verdict. */
export type MeasuredFigure = Omit<Figure, "threshold" | "verdict">;

/** What a check hands back. */
export interface CheckOutcome {
  figures: MeasuredFigure[];
  series?: TimeSeries[];
  latency?: LatencyCurve[];
  /** Invariants broken beyond the figures ("snapshot 3 holds a write sent after the call"); each fails the check. */
  violations?: string[];
  /** Context for the report ("node2 was serving; RTO measured to the first write acknowledged on node3"). */
  notes?: string[];
}

/** Phase lengths for a duration setting. */
export interface Timing {
  /** Seconds of one steady fio phase. */
  phaseS: number;
  /** Seconds of load kept up before and after a fault. */
  faultWindowS: number;
}

export const TIMING: Readonly<Record<DurationSetting, Timing>> = {
  short: { phaseS: 4, faultWindowS: 2 },
  standard: { phaseS: 15, faultWindowS: 5 },
  long: { phaseS: 60, faultWindowS: 15 },
};

/** Everything a check gets. */
export interface CheckContext {
  target: Target;
  profile: Profile;
  duration: DurationSetting;
  timing: Timing;
  /** `--faults N` of the fault campaign. */
  faults: number;
  /** Scratch directory of this check (fio state files, mounts); removed after. */
  workDir: string;
  progress: Progress;
  /** Aborted on SIGINT/SIGTERM: stop load, clean up, reject with CANCELLED. */
  signal: AbortSignal;
  /** Deterministic randomness for the run (`--seed`). */
  random: () => number;
  /**
   * Unique volume name for this check (`<check>-<suffix>`). Volumes the check
   * makes through it are deleted after the check, also when it fails.
   */
  volumeName(suffix: string): string;
}

/** One check of a family. */
export interface Check {
  /** `family.name`. */
  id: string;
  family: Family;
  title: string;
  /** One line on what it measures, for `list`. */
  measures: string;
  /** Capabilities without which it is not applicable. */
  needs: readonly Capability[];
  /** Least nodes the target must have. */
  minNodes?: number;
  /** Why the run's options leave nothing to measure (e.g. `--faults 0`), or null. */
  skipReason?: (options: { faults: number }) => string | null;
  run(ctx: CheckContext): Promise<CheckOutcome>;
}
