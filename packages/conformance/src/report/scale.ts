// Axis arithmetic for the SVG charts: linear "nice" ticks, decade ticks for
// log axes, and the "nines" transform for percentiles.

/** Linear ticks on round steps (1, 2 or 5 times a power of ten) covering [min, max]. */
export function niceTicks(min: number, max: number, targetCount = 5): number[] {
  const step = niceStep(min, max, targetCount);
  const ticks: number[] = [];
  const first = Math.ceil(min / step - 1e-9);
  // Bounded: the step is at least 2/3 of span/targetCount, so this ends after about 1.5*targetCount ticks.
  // Multiplying (rather than adding steps) and rounding to 12 digits keeps 0.6 from printing as 0.6000000000000001.
  for (let k = first; k * step <= max + step * 1e-9; k++) ticks.push(Number.parseFloat((k * step).toPrecision(12)));
  return ticks;
}

/** The round step niceTicks uses; 1 for an empty span. */
export function niceStep(min: number, max: number, targetCount = 5): number {
  const span = max - min;
  if (!(span > 0) || !Number.isFinite(span)) return 1;
  const raw = span / targetCount;
  const magnitude = 10 ** Math.floor(Math.log10(raw));
  const normalized = raw / magnitude;
  const factor = normalized < 1.5 ? 1 : normalized < 3 ? 2 : normalized < 7 ? 5 : 10;
  return factor * magnitude;
}

/** The smallest multiple of the nice step at or above `max`, so the top tick frames the data. */
export function niceCeil(max: number, targetCount = 5): number {
  if (!(max > 0)) return 1;
  const step = niceStep(0, max, targetCount);
  return Math.ceil(max / step - 1e-9) * step;
}

/** The 1-2-5 steps within a decade that log axes snap to. */
const LOG_STEPS = [1, 2, 5] as const;

/**
 * Log-axis bounds around positive values, snapped to 1, 2 or 5 times a power of
 * ten, so the data fills the plot without leaving most of a decade empty.
 */
export function logDomain(values: readonly number[]): { lo: number; hi: number } {
  const positive = values.filter((v) => v > 0 && Number.isFinite(v));
  if (positive.length === 0) return { lo: 1, hi: 10 };
  const min = Math.min(...positive);
  const max = Math.max(...positive);
  const minExp = Math.floor(Math.log10(min));
  const lo =
    [...LOG_STEPS]
      .reverse()
      .map((s) => s * 10 ** minExp)
      .find((v) => v <= min * (1 + 1e-9)) ?? 10 ** minExp;
  const maxExp = Math.floor(Math.log10(max));
  const hi = [...LOG_STEPS, 10].map((s) => s * 10 ** maxExp).find((v) => v >= max * (1 - 1e-9) && v > lo) ?? 10 ** (maxExp + 1);
  return { lo, hi: hi > lo ? hi : lo * 10 };
}

/** Up to this many decades a log axis gets 1-2-5 ticks (about nine labels); wider ones get decades only. */
const MAX_DECADES_WITH_SUB_TICKS = 3.2;

/** Log-axis ticks within [lo, hi]: 1-2-5 steps on narrow axes, else decades only. */
export function logTicks(lo: number, hi: number): number[] {
  const withSubTicks = Math.log10(hi / lo) <= MAX_DECADES_WITH_SUB_TICKS;
  const ticks: number[] = [];
  for (let e = Math.floor(Math.log10(lo)); e <= Math.ceil(Math.log10(hi)); e++) {
    for (const s of withSubTicks ? LOG_STEPS : [1]) {
      const t = s * 10 ** e;
      if (t >= lo * (1 - 1e-9) && t <= hi * (1 + 1e-9)) ticks.push(t);
    }
  }
  return ticks;
}

/**
 * The "nines" of a percentile, -log10(1 - p/100): p90 is 1, p99 is 2, p99.9 is
 * 3. It spreads the tail, where storage latency lives, evenly across the axis.
 * Undefined for p >= 100, which has infinitely many nines.
 */
export function nines(percentile: number): number | undefined {
  if (percentile >= 100) return undefined;
  return -Math.log10(1 - Math.max(0, percentile) / 100);
}

/** The percentile with `n` nines: 1 -> 90, 2 -> 99, 3 -> 99.9. */
export function percentileOfNines(n: number): number {
  return 100 * (1 - 10 ** -n);
}

/** An SVG coordinate with one decimal; a non-finite input (bad data) draws at 0 rather than breaking the file. */
export function coord(n: number): string {
  return Number.isFinite(n) ? String(Math.round(n * 10) / 10) : "0";
}
