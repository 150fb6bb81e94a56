// Number, threshold and duration formatting shared by the HTML, JUnit and
// terminal renderings, so that the three show the same figure the same way.

import type { CheckResult, Figure, Threshold } from "./types.js";

/**
 * A figure's value for people: grouping above 1000 and fewer decimals as the
 * magnitude grows, so a column of IOPS and ratios stays readable. The exact
 * value is always in report.json.
 */
export function formatValue(value: number): string {
  if (!Number.isFinite(value)) return String(value);
  const abs = Math.abs(value);
  if (Number.isInteger(value)) return value.toLocaleString("en-US");
  if (abs >= 100) return value.toLocaleString("en-US", { maximumFractionDigits: 0 });
  if (abs >= 10) return value.toLocaleString("en-US", { maximumFractionDigits: 1 });
  if (abs >= 1) return value.toLocaleString("en-US", { maximumFractionDigits: 2 });
  return value.toLocaleString("en-US", { maximumSignificantDigits: 3 });
}

/** `value unit`, without a dangling space when the unit is empty. */
export function formatWithUnit(value: number, unit: string): string {
  return unit === "" ? formatValue(value) : `${formatValue(value)} ${unit}`;
}

/** `≥ min`, `≤ max`, `min – max`, or "" when the figure is not judged. */
export function formatThreshold(threshold: Threshold | undefined, unit: string): string {
  if (threshold === undefined) return "";
  const suffix = unit === "" ? "" : ` ${unit}`;
  const { min, max } = threshold;
  if (min !== undefined && max !== undefined) return `${formatValue(min)} – ${formatValue(max)}${suffix}`;
  if (min !== undefined) return `≥ ${formatValue(min)}${suffix}`;
  if (max !== undefined) return `≤ ${formatValue(max)}${suffix}`;
  return "";
}

/** A duration in ms as "850 ms", "12.3 s" or "4 min 05 s". */
export function formatDurationMs(durationMs: number): string {
  if (!Number.isFinite(durationMs) || durationMs < 0) return "–";
  if (durationMs < 1000) return `${Math.round(durationMs)} ms`;
  if (durationMs < 60_000) return `${(durationMs / 1000).toFixed(1)} s`;
  const totalS = Math.round(durationMs / 1000);
  const min = Math.floor(totalS / 60);
  const s = totalS % 60;
  if (min < 60) return `${min} min ${String(s).padStart(2, "0")} s`;
  return `${Math.floor(min / 60)} h ${String(min % 60).padStart(2, "0")} min`;
}

/** A latency in µs with the unit people read best at that size: "85 µs", "1.24 ms", "2.1 s". */
export function formatLatencyUs(latencyUs: number): string {
  if (latencyUs < 1000) return `${formatValue(latencyUs)} µs`;
  if (latencyUs < 1_000_000) return `${formatValue(latencyUs / 1000)} ms`;
  return `${formatValue(latencyUs / 1_000_000)} s`;
}

/**
 * The one figure a summary row shows for a check: the first failing judged
 * figure (what made it fail), else the first judged figure, else the first
 * figure. Undefined when the check has none (not applicable, error).
 */
export function keyFigure(check: CheckResult): Figure | undefined {
  return (
    check.figures.find((f) => f.verdict === "fail") ?? check.figures.find((f) => f.threshold !== undefined) ?? check.figures[0]
  );
}

/** ms between two ISO timestamps; NaN when either does not parse. */
export function elapsedMs(fromIso: string, toIso: string): number {
  return Date.parse(toIso) - Date.parse(fromIso);
}

/** "not-applicable" reads as "n/a" in tables; the others as they are. */
export function verdictLabel(verdict: string): string {
  return verdict === "not-applicable" ? "n/a" : verdict;
}
