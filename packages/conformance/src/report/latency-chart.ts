// Latency percentile curves as an inline SVG: x on the nines scale, y in µs on
// a log scale, one line per replica count. No script; hover text comes from
// SVG <title> elements.

import { escapeMarkup } from "./escape.js";
import { formatLatencyUs, formatValue } from "./format.js";
import { coord, logDomain, logTicks, nines, percentileOfNines } from "./scale.js";
import type { LatencyCurve } from "./types.js";

/** Colour-blind-safe line colours (Okabe–Ito), in replica-count order; they repeat past eight curves. */
export const CURVE_COLORS = ["#0072B2", "#D55E00", "#009E73", "#CC79A7", "#E69F00", "#56B4E9", "#000000", "#F0E442"];

const WIDTH = 720;
const HEIGHT = 340;
const MARGIN = { left: 70, right: 20, top: 16, bottom: 44 };
/** p99.99 is the right edge unless a curve reaches further; beyond seven nines fio's resolution is noise. */
const MIN_NINES = 4;
const MAX_NINES = 7;

interface Plot {
  x(n: number): number;
  y(latencyUs: number): number;
}

function plotFor(curves: readonly LatencyCurve[]): { plot: Plot; maxNines: number; lo: number; hi: number } {
  const all = curves.flatMap((c) => c.percentiles);
  const dataNines = all.map((p) => nines(p.percentile)).filter((n): n is number => n !== undefined);
  const maxNines = Math.min(MAX_NINES, Math.max(MIN_NINES, Math.ceil(Math.max(0, ...dataNines) - 1e-9)));
  const { lo, hi } = logDomain(all.map((p) => p.latencyUs));
  const innerW = WIDTH - MARGIN.left - MARGIN.right;
  const innerH = HEIGHT - MARGIN.top - MARGIN.bottom;
  const plot: Plot = {
    x: (n) => MARGIN.left + (Math.min(n, maxNines) / maxNines) * innerW,
    // Zero latency cannot sit on a log axis; it is drawn on the bottom edge.
    y: (us) => MARGIN.top + innerH - (Math.log10(Math.max(us, lo) / lo) / Math.log10(hi / lo)) * innerH,
  };
  return { plot, maxNines, lo, hi };
}

function percentileLabel(n: number): string {
  // 1 -> "p90", 2 -> "p99", 3 -> "p99.9": rounding to n-1 decimals removes float noise.
  return `p${Number(percentileOfNines(n).toFixed(Math.max(0, n - 1)))}`;
}

function axes(plot: Plot, maxNines: number, lo: number, hi: number): string {
  const top = MARGIN.top;
  const bottom = HEIGHT - MARGIN.bottom;
  const left = MARGIN.left;
  const right = WIDTH - MARGIN.right;
  const parts: string[] = [];
  for (const us of logTicks(lo, hi)) {
    const y = coord(plot.y(us));
    const major = Number.isInteger(Math.log10(us));
    parts.push(`<line class="grid${major ? " major" : ""}" x1="${left}" x2="${right}" y1="${y}" y2="${y}"/>`);
    parts.push(
      `<text class="tick" x="${left - 8}" y="${y}" text-anchor="end" dominant-baseline="middle">${escapeMarkup(formatLatencyUs(us))}</text>`,
    );
  }
  const xTicks = [{ n: nines(50) ?? 0, label: "p50" }];
  for (let n = 1; n <= maxNines; n++) xTicks.push({ n, label: percentileLabel(n) });
  for (const { n, label } of xTicks) {
    const x = coord(plot.x(n));
    parts.push(`<line class="grid" x1="${x}" x2="${x}" y1="${top}" y2="${bottom}"/>`);
    parts.push(`<text class="tick" x="${x}" y="${bottom + 18}" text-anchor="middle">${label}</text>`);
  }
  parts.push(`<line class="axis" x1="${left}" x2="${right}" y1="${bottom}" y2="${bottom}"/>`);
  parts.push(`<line class="axis" x1="${left}" x2="${left}" y1="${top}" y2="${bottom}"/>`);
  parts.push(
    `<text class="axis-title" x="${(left + right) / 2}" y="${HEIGHT - 6}" text-anchor="middle">percentile (nines scale)</text>`,
  );
  return parts.join("");
}

function line(plot: Plot, curve: LatencyCurve, color: string): string {
  const points = curve.percentiles
    .map((p) => ({ ...p, n: nines(p.percentile) }))
    .filter((p): p is { percentile: number; latencyUs: number; n: number } => p.n !== undefined)
    .sort((a, b) => a.n - b.n);
  const path = points.map((p) => `${coord(plot.x(p.n))},${coord(plot.y(p.latencyUs))}`).join(" ");
  const dots = points
    .map(
      (p) =>
        `<circle cx="${coord(plot.x(p.n))}" cy="${coord(plot.y(p.latencyUs))}" r="2.6" fill="${color}">` +
        `<title>${curve.replicas} replica${curve.replicas === 1 ? "" : "s"}, p${formatValue(p.percentile)}: ${escapeMarkup(formatLatencyUs(p.latencyUs))}</title></circle>`,
    )
    .join("");
  return `<g class="curve"><polyline fill="none" stroke="${color}" stroke-width="2" stroke-linejoin="round" points="${path}"/>${dots}</g>`;
}

/**
 * One chart for one bench profile; `curves` are that profile's runs (one per
 * replica count). Colours follow the order of `curves`, so a legend rendered
 * from the same array with {@link CURVE_COLORS} matches.
 */
export function latencyChartSvg(profile: string, curves: readonly LatencyCurve[]): string {
  const { plot, maxNines, lo, hi } = plotFor(curves);
  const lines = curves.map((c, i) => line(plot, c, CURVE_COLORS[i % CURVE_COLORS.length] ?? "#000")).join("");
  const label = `Completion latency percentiles of ${profile}`;
  return (
    `<svg class="chart" data-chart="latency" viewBox="0 0 ${WIDTH} ${HEIGHT}" role="img" aria-label="${escapeMarkup(label)}" xmlns="http://www.w3.org/2000/svg">` +
    `<title>${escapeMarkup(label)}</title>${axes(plot, maxNines, lo, hi)}${lines}</svg>`
  );
}
