// The regression gate: compares a run's figures with a baseline report's and
// calls out what got worse by more than a bound. Rules:
//
// - Figures match by check id + figure name. Latency curves add two derived
//   figures per (check, profile, replicas): `latency.<profile>.r<n>.p99Us`
//   (lower is better) and `latency.<profile>.r<n>.iops` (higher is better).
// - change % = (current - baseline) / |baseline| * 100.
// - better "higher": a change below -bound is a regression, above +bound an
//   improvement. better "lower": the mirror image. better "none": never judged.
// - A zero baseline has no percentage. A change of at most ZERO_BASELINE_EPSILON
//   (absolute) is no change; otherwise any move the wrong way is a regression
//   (lostWrites 0 -> 1 must fail the gate, however small 1 is), the right way
//   an improvement.
// - A figure whose unit changed is "incomparable": listed, not judged.
// - Figures in only one report are "added"/"removed", not regressions; but a
//   check that passed in the baseline and is missing now is a regression.
// - A check whose verdict went from pass to anything else (fail, error, not
//   applicable) is a regression: it no longer shows what it showed.
// - Runs made differently (target, duration, nodes, faults) are a regression
//   of the comparison itself: their figures are not comparable.

import { ConformanceError } from "../errors.js";
import { formatValue } from "../report/format.js";
import type { Better, CheckResult, LatencyCurve, Report, Verdict } from "../report/types.js";

/** Changes of a zero baseline up to this (in the figure's unit) are float noise, not a change. */
export const ZERO_BASELINE_EPSILON = 1e-9;

export type FigureStatus = "regressed" | "improved" | "within" | "unjudged" | "incomparable" | "added" | "removed";

/** One figure in one or both reports, and what the gate made of it. */
export interface FigureComparison {
  checkId: string;
  figure: string;
  unit: string;
  better: Better;
  baseline?: number;
  current?: number;
  /** Undefined when a side is missing or the baseline is zero (see the file's rules). */
  changePct?: number;
  status: FigureStatus;
}

/** A check whose verdict differs between the reports, or that is in only one. */
export interface VerdictComparison {
  checkId: string;
  baseline?: Verdict;
  current?: Verdict;
  regression: boolean;
}

export interface Comparison {
  maxRegressionPct: number;
  /** Current report's order, then figures only the baseline has. */
  figures: FigureComparison[];
  verdicts: VerdictComparison[];
  /** One line per regression, for people; empty when the gate passes. */
  regressions: string[];
  ok: boolean;
}

interface FigureValue {
  checkId: string;
  figure: string;
  unit: string;
  better: Better;
  value: number;
}

/** p99 of a curve: the recorded point, else interpolated on the nines scale between its neighbours. */
export function p99Us(curve: LatencyCurve): number | undefined {
  const points = [...curve.percentiles].sort((a, b) => a.percentile - b.percentile);
  const exact = points.find((p) => p.percentile === 99);
  if (exact !== undefined) return exact.latencyUs;
  const above = points.findIndex((p) => p.percentile > 99);
  const hi = points[above];
  const lo = points[above - 1];
  if (above <= 0 || hi === undefined || lo === undefined || hi.percentile >= 100) return undefined;
  const n = (p: number): number => -Math.log10(1 - p / 100);
  const t = (n(99) - n(lo.percentile)) / (n(hi.percentile) - n(lo.percentile));
  return lo.latencyUs + t * (hi.latencyUs - lo.latencyUs);
}

function figuresOf(check: CheckResult): FigureValue[] {
  const own = check.figures.map((f) => ({ checkId: check.id, figure: f.name, unit: f.unit, better: f.better, value: f.value }));
  const derived = check.latency.flatMap((c): FigureValue[] => {
    const prefix = `latency.${c.profile}.r${c.replicas}`;
    const iops: FigureValue = { checkId: check.id, figure: `${prefix}.iops`, unit: "IOPS", better: "higher", value: c.iops };
    const p99 = p99Us(c);
    return p99 === undefined
      ? [iops]
      : [{ checkId: check.id, figure: `${prefix}.p99Us`, unit: "us", better: "lower", value: p99 }, iops];
  });
  return [...own, ...derived];
}

/** Figures by "checkId\0figure"; a repeated name gets "#2", "#3" so that none is silently dropped. */
function indexFigures(report: Report): Map<string, FigureValue> {
  const index = new Map<string, FigureValue>();
  for (const f of report.checks.flatMap(figuresOf)) {
    let name = f.figure;
    for (let n = 2; index.has(`${f.checkId}\0${name}`); n++) name = `${f.figure}#${n}`;
    index.set(`${f.checkId}\0${name}`, { ...f, figure: name });
  }
  return index;
}

/** Judges one figure present in both reports. */
export function judgeChange(
  baseline: number,
  current: number,
  better: Better,
  maxRegressionPct: number,
): { changePct?: number; status: FigureStatus } {
  if (better === "none")
    return { changePct: baseline === 0 ? undefined : ((current - baseline) / Math.abs(baseline)) * 100, status: "unjudged" };
  const sign = better === "higher" ? 1 : -1;
  if (baseline === 0) {
    const delta = (current - baseline) * sign;
    if (Math.abs(delta) <= ZERO_BASELINE_EPSILON) return { status: "within" };
    return { status: delta < 0 ? "regressed" : "improved" };
  }
  const changePct = ((current - baseline) / Math.abs(baseline)) * 100;
  const gainPct = changePct * sign;
  if (gainPct < -maxRegressionPct) return { changePct, status: "regressed" };
  if (gainPct > maxRegressionPct) return { changePct, status: "improved" };
  return { changePct, status: "within" };
}

function compareFigures(baseline: Report, current: Report, maxRegressionPct: number): FigureComparison[] {
  const before = indexFigures(baseline);
  const after = indexFigures(current);
  const rows: FigureComparison[] = [];
  for (const [key, cur] of after) {
    const base = before.get(key);
    const row = { checkId: cur.checkId, figure: cur.figure, unit: cur.unit, better: cur.better, current: cur.value };
    if (base === undefined) rows.push({ ...row, status: "added" });
    else if (base.unit !== cur.unit) rows.push({ ...row, baseline: base.value, status: "incomparable" });
    else rows.push({ ...row, baseline: base.value, ...judgeChange(base.value, cur.value, cur.better, maxRegressionPct) });
  }
  for (const [key, base] of before) {
    if (!after.has(key))
      rows.push({
        checkId: base.checkId,
        figure: base.figure,
        unit: base.unit,
        better: base.better,
        baseline: base.value,
        status: "removed",
      });
  }
  return rows;
}

function compareVerdicts(baseline: Report, current: Report): VerdictComparison[] {
  const before = new Map(baseline.checks.map((c) => [c.id, c.verdict] as const));
  const after = new Map(current.checks.map((c) => [c.id, c.verdict] as const));
  const rows: VerdictComparison[] = [];
  for (const [checkId, cur] of after) {
    const base = before.get(checkId);
    if (base === cur) continue;
    // A check that passed and now does not (fails, errs, or no longer applies) lost what it showed.
    rows.push({ checkId, baseline: base, current: cur, regression: base === "pass" && cur !== "pass" });
  }
  // A check the baseline judged and the current run did not is a gap in the gate, not a neutral change.
  for (const [checkId, base] of before)
    if (!after.has(checkId)) rows.push({ checkId, baseline: base, regression: base === "pass" });
  return rows;
}

function describeRegression(f: FigureComparison): string {
  const change = f.changePct === undefined ? "from 0" : `${f.changePct > 0 ? "+" : ""}${f.changePct.toFixed(1)}%`;
  return `${f.checkId} ${f.figure}: ${formatValue(f.baseline ?? 0)} -> ${formatValue(f.current ?? 0)} ${f.unit} (${change}; ${f.better} is better)`;
}

/** How the two runs were made differently (target, duration, nodes, faults), each as a sentence. */
function runMismatches(baseline: Report, current: Report): string[] {
  const facts = (r: Report) => ({
    target: r.environment.target,
    duration: r.environment.duration,
    nodes: r.options.nodes,
    faults: r.options.faults,
  });
  const b = facts(baseline);
  const c = facts(current);
  return (Object.keys(b) as (keyof typeof b)[])
    .filter((k) => b[k] !== c[k])
    .map((k) => `runs differ: ${k} ${b[k]} in the baseline, ${c[k]} now; compare runs made alike`);
}

/**
 * Compares `current` with `baseline`. Pure. See the rules at the top of this
 * file; `ok` is false when any figure or verdict regressed.
 *
 * @throws ConformanceError INVALID_ARGUMENT when maxRegressionPct is negative or not finite.
 */
export function compareReports(baseline: Report, current: Report, options: { maxRegressionPct: number }): Comparison {
  const { maxRegressionPct } = options;
  if (!Number.isFinite(maxRegressionPct) || maxRegressionPct < 0) {
    throw new ConformanceError({
      code: "INVALID_ARGUMENT",
      message: `maxRegressionPct ${maxRegressionPct}: expected a finite number >= 0`,
    });
  }
  const figures = compareFigures(baseline, current, maxRegressionPct);
  // Figures of runs made differently are not comparable: a short run against a standard baseline says nothing.
  const mismatched = runMismatches(baseline, current);
  const verdicts = compareVerdicts(baseline, current);
  const regressions = [
    ...mismatched,
    ...verdicts.filter((v) => v.regression).map((v) => `${v.checkId}: verdict ${v.baseline} -> ${v.current}`),
    ...figures.filter((f) => f.status === "regressed").map(describeRegression),
  ];
  return { maxRegressionPct, figures, verdicts, regressions, ok: regressions.length === 0 };
}
