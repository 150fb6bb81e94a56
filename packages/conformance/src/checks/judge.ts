// Verdicts from figures: a check measures, the profile bounds, this decides.
// Pure, so the rules are unit-tested on their own.

import type { Profile } from "../profile/profile.js";
import type { CheckResult, Figure, Threshold } from "../report/types.js";
import type { Check, CheckOutcome, MeasuredFigure } from "./check.js";

function within(value: number, t: Threshold): boolean {
  if (!Number.isFinite(value)) return false;
  if (t.min !== undefined && value < t.min) return false;
  if (t.max !== undefined && value > t.max) return false;
  return true;
}

function describeBound(t: Threshold, unit: string): string {
  const parts: string[] = [];
  if (t.min !== undefined) parts.push(`>= ${t.min} ${unit}`);
  if (t.max !== undefined) parts.push(`<= ${t.max} ${unit}`);
  return parts.join(" and ");
}

/** A figure with the profile's bound and its verdict. */
export function judgeFigure(figure: MeasuredFigure, threshold: Threshold | undefined): Figure {
  if (!threshold) return { ...figure, verdict: "info" };
  return { ...figure, threshold, verdict: within(figure.value, threshold) ? "pass" : "fail" };
}

/** The failure sentence of a figure out of bounds: what was expected, what was measured. */
export function figureFailure(figure: Figure): string {
  const bound = figure.threshold ? describeBound(figure.threshold, figure.unit) : "";
  return `${figure.name}: expected ${bound}, measured ${formatValue(figure.value)} ${figure.unit}`;
}

export function formatValue(value: number): string {
  if (!Number.isFinite(value)) return String(value);
  if (Number.isInteger(value)) return String(value);
  return Math.abs(value) >= 100 ? value.toFixed(0) : value.toPrecision(3);
}

/**
 * The result of a check that ran: each figure judged by the profile; the
 * check fails when a figure is out of bounds, an invariant broke, or the
 * profile bounds a figure the check did not measure (a bound never checked
 * must not read as passed).
 */
export function judge(
  check: Check,
  outcome: CheckOutcome,
  profile: Profile,
  timing: { startedAt: string; durationMs: number },
): CheckResult {
  const bounds = profile.thresholds[check.id] ?? {};
  // A figure the check could not measure (NaN) is no number to report; it is named as unmeasured.
  const unmeasured = outcome.figures.filter((f) => !Number.isFinite(f.value));
  const figures = outcome.figures.filter((f) => Number.isFinite(f.value)).map((f) => judgeFigure(f, bounds[f.name]));
  const failures = figures.filter((f) => f.verdict === "fail").map(figureFailure);
  for (const f of unmeasured)
    if (bounds[f.name]) failures.push(`${f.name}: bounded by the profile but the target gave no figure`);
  for (const name of Object.keys(bounds)) {
    if (!outcome.figures.some((f) => f.name === name)) failures.push(`${name}: bounded by the profile but not measured`);
  }
  const violations = outcome.violations ?? [];
  const failed = failures.length > 0 || violations.length > 0;
  const notes = outcome.notes ?? [];
  const message = failed ? [...violations, ...failures].join("; ") : notes.join(" ");
  const known = failed ? profile.knownFailures?.[check.id] : undefined;
  return {
    id: check.id,
    family: check.family,
    title: check.title,
    verdict: failed ? "fail" : "pass",
    ...(known ? { knownFailure: { ...known } } : {}),
    message,
    figures,
    series: outcome.series ?? [],
    latency: outcome.latency ?? [],
    ...(notes.length > 0 ? { notes } : {}),
    startedAt: timing.startedAt,
    durationMs: timing.durationMs,
  };
}

/** A check that did not run: not applicable (with why) or an error. */
export function unrun(
  check: Check,
  verdict: "not-applicable" | "error",
  message: string,
  timing: { startedAt: string; durationMs: number },
): CheckResult {
  return {
    id: check.id,
    family: check.family,
    title: check.title,
    verdict,
    message,
    figures: [],
    series: [],
    latency: [],
    startedAt: timing.startedAt,
    durationMs: timing.durationMs,
  };
}
