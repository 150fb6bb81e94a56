// The terminal summary printed at the end of a run: one row per check with
// its verdict and key figure, columns aligned on visible width.

import { createColors } from "picocolors";
import { formatThreshold, formatWithUnit, keyFigure, verdictLabel } from "./format.js";
import type { Report, Verdict } from "./types.js";

type Colors = ReturnType<typeof createColors>;

/** A cell: its plain text (for width) and how to colour it. */
export interface Cell {
  text: string;
  paint?: (s: string) => string;
}

function verdictPaint(c: Colors, verdict: Verdict): (s: string) => string {
  switch (verdict) {
    case "pass":
      return (s) => c.green(s);
    case "fail":
      return (s) => c.bold(c.red(s));
    case "error":
      return (s) => c.bold(c.yellow(s));
    case "not-applicable":
      return (s) => c.dim(s);
  }
}

/** Pads on plain text before painting, so escape codes never count toward a column's width. */
export function renderRows(rows: readonly Cell[][], rightAligned: ReadonlySet<number> = new Set()): string[] {
  const widths: number[] = [];
  for (const row of rows) {
    row.forEach((cell, i) => {
      widths[i] = Math.max(widths[i] ?? 0, [...cell.text].length);
    });
  }
  return rows.map((row) =>
    row
      .map((cell, i) => {
        const pad = " ".repeat((widths[i] ?? 0) - [...cell.text].length);
        const painted = cell.paint === undefined ? cell.text : cell.paint(cell.text);
        // The last column is not padded: trailing spaces only wrap narrow terminals.
        if (i === row.length - 1) return rightAligned.has(i) ? pad + painted : painted;
        return rightAligned.has(i) ? pad + painted : painted + pad;
      })
      .join("  ")
      .trimEnd(),
  );
}

/** The summary table as text; `color` adds ANSI colours (picocolors), independent of the environment's detection. */
export function renderSummaryTable(report: Report, options: { color: boolean }): string {
  const c = createColors(options.color);
  const header: Cell[] = ["CHECK", "VERDICT", "FIGURE", "THRESHOLD"].map((text) => ({ text, paint: (s) => c.dim(s) }));
  const rows: Cell[][] = report.checks.map((check) => {
    const key = keyFigure(check);
    const known = check.knownFailure === undefined ? "" : ` (known ${check.knownFailure.issue})`;
    return [
      { text: check.id },
      { text: `${verdictLabel(check.verdict)}${known}`, paint: verdictPaint(c, check.verdict) },
      {
        text: key === undefined ? "-" : `${key.name} ${formatWithUnit(key.value, key.unit)}`,
        paint: key?.verdict === "fail" ? (s) => c.red(s) : undefined,
      },
      { text: key === undefined ? "" : formatThreshold(key.threshold, key.unit) },
    ];
  });
  const { pass, fail, notApplicable, error } = report.summary;
  const total = `${report.checks.length} check${report.checks.length === 1 ? "" : "s"}: ${pass} pass, ${fail} fail, ${notApplicable} not applicable, ${error} error`;
  const outcome = fail + error > 0 ? c.bold(c.red(total)) : c.bold(c.green(total));
  return `${renderRows([header, ...rows]).join("\n")}\n\n${outcome}\n`;
}
