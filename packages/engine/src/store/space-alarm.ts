import assert from "node:assert";
import type { PoolSpace } from "./pool-space.js";

// Space alerts of a pool: which usage thresholds it is past, with hysteresis,
// so that usage hovering at a threshold raises it once, not on every check.

/** Used-space thresholds alerted on by default, in percent; 100 means full (no free extent). */
export const DEFAULT_SPACE_ALERT_THRESHOLDS: readonly number[] = [80, 90, 100];
/** A raised threshold re-arms only once usage is this many points below it (hysteresis). */
export const DEFAULT_REARM_MARGIN_PERCENT = 5;

/** A threshold crossed, either way. */
export interface SpaceCrossing {
  /** The threshold in percent of the pool's data capacity; 100: the pool is full. */
  thresholdPercent: number;
  /** "raised": usage reached it; "cleared": usage fell back below it by the re-arm margin. */
  state: "raised" | "cleared";
  usedBytes: number;
  totalBytes: number;
}

/** Whether `space` has reached `threshold` percent used; 100 counts only a pool with no free extent. */
function reached(space: PoolSpace, threshold: number): boolean {
  if (threshold >= 100) return space.freeBytes === 0;
  return space.allocatedBytes * 100 >= threshold * space.totalBytes;
}

/** Whether `space` has fallen `margin` points below `threshold`. */
function belowByMargin(space: PoolSpace, threshold: number, margin: number): boolean {
  return space.allocatedBytes * 100 < (threshold - margin) * space.totalBytes;
}

/**
 * The thresholds a pool is past. Each raises once when usage reaches it and
 * clears once usage falls below it by the re-arm margin; in between nothing
 * is reported, however often it is checked.
 */
export class SpaceAlarm {
  readonly thresholds: readonly number[];
  readonly #marginPercent: number;
  /** Thresholds raised and not yet cleared. */
  readonly #raised = new Set<number>();
  /** Raises of each threshold since start (the metric's counter). */
  readonly #raises = new Map<number, number>();

  constructor(thresholds: readonly number[] = DEFAULT_SPACE_ALERT_THRESHOLDS, marginPercent = DEFAULT_REARM_MARGIN_PERCENT) {
    assert(
      thresholds.every((t) => Number.isInteger(t) && t > 0 && t <= 100),
      "thresholds are whole percents in (0, 100]",
    );
    assert(marginPercent > 0 && marginPercent < 100, "the re-arm margin is a percent in (0, 100)");
    this.thresholds = [...thresholds].sort((a, b) => a - b);
    this.#marginPercent = marginPercent;
  }

  /** The crossings since the last check (lowest threshold first when raised, highest first when cleared). */
  check(space: PoolSpace): SpaceCrossing[] {
    const crossings: SpaceCrossing[] = [];
    const at = (thresholdPercent: number, state: SpaceCrossing["state"]): SpaceCrossing => ({
      thresholdPercent,
      state,
      usedBytes: space.allocatedBytes,
      totalBytes: space.totalBytes,
    });
    for (const t of this.thresholds) {
      if (this.#raised.has(t) || !reached(space, t)) continue;
      this.#raised.add(t);
      this.#raises.set(t, (this.#raises.get(t) ?? 0) + 1);
      crossings.push(at(t, "raised"));
    }
    for (const t of [...this.thresholds].reverse()) {
      if (!this.#raised.has(t) || !belowByMargin(space, t, this.#marginPercent)) continue;
      this.#raised.delete(t);
      crossings.push(at(t, "cleared"));
    }
    return crossings;
  }

  /** Whether `threshold` is raised now. */
  isRaised(threshold: number): boolean {
    return this.#raised.has(threshold);
  }

  /** How many times `threshold` was raised since start. */
  raises(threshold: number): number {
    return this.#raises.get(threshold) ?? 0;
  }
}
