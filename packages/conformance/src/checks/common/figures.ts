// Figures as checks report them, and the arithmetic on them. A value that
// was not measured is NaN, never 0: the judge turns a NaN into "bounded by
// the profile but the target gave no figure" and leaves it out of the report,
// where a 0 would pass every `max` bound and read as an improvement in
// `compare`.

import type { Better } from "../../report/types.js";
import type { MeasuredFigure } from "../check.js";

/** A measured figure; NaN when it could not be measured. */
export function figure(name: string, value: number, unit: string, better: Better, description: string): MeasuredFigure {
  return { name, value, unit, better, description };
}

/**
 * `numerator / denominator`, or NaN when either side was not measured (not
 * finite) or the denominator is 0: a ratio over nothing measured is no ratio.
 */
export function ratio(numerator: number, denominator: number): number {
  if (!Number.isFinite(numerator) || !Number.isFinite(denominator) || denominator === 0) return Number.NaN;
  return numerator / denominator;
}

/** The `p`th percentile (0-100) of ascending `sortedValues` by nearest rank; NaN when there are none. */
export function percentile(sortedValues: readonly number[], p: number): number {
  if (sortedValues.length === 0) return Number.NaN;
  const rank = Math.min(sortedValues.length - 1, Math.max(0, Math.ceil((p / 100) * sortedValues.length) - 1));
  return sortedValues[rank] as number;
}

/** `values` in ascending order (a copy), for {@link percentile}. */
export function ascending(values: readonly number[]): number[] {
  return [...values].sort((a, b) => a - b);
}
