// The regression gate's bound, as the CLI takes it: `--max-regression 10%`.

import { ConformanceError } from "../errors.js";

/** Beyond a tenfold worsening a bound gates nothing; a larger value is surely a typo. */
export const MAX_REGRESSION_BOUND_PCT = 1000;

const BOUND_PATTERN = /^\s*(\d+(?:\.\d+)?)\s*%?\s*$/;

/**
 * Parses "10%" (or "10", "2.5%") to 10. Zero is allowed: any worsening fails.
 *
 * @throws ConformanceError INVALID_ARGUMENT naming the text when it is not a
 *   number from 0 to {@link MAX_REGRESSION_BOUND_PCT}, with an optional "%".
 */
export function parseRegressionBound(text: string): number {
  const match = BOUND_PATTERN.exec(text);
  const value = match?.[1] === undefined ? Number.NaN : Number(match[1]);
  if (!Number.isFinite(value) || value > MAX_REGRESSION_BOUND_PCT) {
    throw new ConformanceError({
      code: "INVALID_ARGUMENT",
      message: `invalid regression bound ${JSON.stringify(text)}: expected a percentage from 0 to ${MAX_REGRESSION_BOUND_PCT}, such as "10%"`,
    });
  }
  return value;
}
