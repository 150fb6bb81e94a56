// The comparison as a terminal table: baseline and current side by side, the
// change, and what the gate made of it, then the verdict.

import { createColors } from "picocolors";
import { formatValue } from "../report/format.js";
import { type Cell, renderRows } from "../report/table.js";
import type { Comparison, FigureComparison, FigureStatus } from "./compare.js";

type Colors = ReturnType<typeof createColors>;

function statusPaint(c: Colors, status: FigureStatus | "changed"): ((s: string) => string) | undefined {
  switch (status) {
    case "regressed":
      return (s) => c.bold(c.red(s));
    case "improved":
      return (s) => c.green(s);
    case "added":
    case "removed":
    case "incomparable":
    case "changed":
      return (s) => c.cyan(s);
    default:
      return (s) => c.dim(s);
  }
}

function valueText(value: number | undefined, unit: string): string {
  if (value === undefined) return "-";
  return unit === "" ? formatValue(value) : `${formatValue(value)} ${unit}`;
}

function changeText(f: FigureComparison): string {
  if (f.baseline === undefined || f.current === undefined) return "";
  if (f.changePct === undefined) return f.current === f.baseline ? "0.0%" : "from 0";
  const sign = f.changePct > 0 ? "+" : f.changePct < 0 ? "-" : "";
  return `${sign}${Math.abs(f.changePct).toFixed(1)}%`;
}

function figureRow(c: Colors, f: FigureComparison): Cell[] {
  return [
    { text: f.checkId },
    { text: f.figure },
    { text: valueText(f.baseline, f.unit) },
    { text: valueText(f.current, f.unit) },
    { text: changeText(f), paint: f.status === "regressed" ? (s) => c.red(s) : undefined },
    { text: f.status, paint: statusPaint(c, f.status) },
  ];
}

/** Renders a comparison; `color` adds ANSI colours (picocolors), independent of the environment's detection. */
export function renderComparison(comparison: Comparison, options: { color: boolean }): string {
  const c = createColors(options.color);
  const header: Cell[] = ["CHECK", "FIGURE", "BASELINE", "CURRENT", "CHANGE", "STATUS"].map((text) => ({
    text,
    paint: (s) => c.dim(s),
  }));
  const verdictRows: Cell[][] = comparison.verdicts.map((v) => {
    const status = v.regression ? "regressed" : "changed";
    return [
      { text: v.checkId },
      { text: "(verdict)" },
      { text: v.baseline ?? "-" },
      { text: v.current ?? "-" },
      { text: "" },
      { text: status, paint: statusPaint(c, status) },
    ];
  });
  const rows = [header, ...verdictRows, ...comparison.figures.map((f) => figureRow(c, f))];
  const bound = `${formatValue(comparison.maxRegressionPct)}%`;
  const compared = comparison.figures.filter((f) => f.baseline !== undefined && f.current !== undefined).length;
  const outcome = comparison.ok
    ? c.bold(c.green(`No regression beyond ${bound} (${compared} figures compared).`))
    : c.bold(
        c.red(`${comparison.regressions.length} regression${comparison.regressions.length === 1 ? "" : "s"} beyond ${bound}:`),
      ) + comparison.regressions.map((r) => `\n  ${r}`).join("");
  return `${renderRows(rows, new Set([2, 3, 4])).join("\n")}\n\n${outcome}\n`;
}
