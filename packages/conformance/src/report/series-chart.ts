// A TimeSeries (IOPS per interval) as an inline SVG step chart, with faults
// and recoveries as labelled vertical lines and stalls as shaded bands.

import { escapeMarkup } from "./escape.js";
import { formatDurationMs, formatValue } from "./format.js";
import { coord, niceCeil, niceTicks } from "./scale.js";
import type { TimeSeries } from "./types.js";

const WIDTH = 720;
const HEIGHT = 300;
/** Rows of mark labels above the plot; marks closer than a label's width go to the next row. */
const LABEL_ROWS = 3;
const LABEL_ROW_PX = 14;
const MARGIN = { left: 70, right: 20, top: 12 + LABEL_ROWS * LABEL_ROW_PX, bottom: 40 };
/** Longer series are averaged into buckets: a 720-px chart cannot show more, and the file stays small. */
export const MAX_DRAWN_POINTS = 1500;
/** Mark labels longer than this are cut with an ellipsis; the full text is in the marks table. */
const MAX_LABEL_CHARS = 36;
/** Rough width of one 11-px label character, to keep labels from overlapping without measuring text. */
const LABEL_CHAR_PX = 6.2;

interface Frame {
  x(ms: number): number;
  y(value: number): number;
  endMs: number;
  yMax: number;
  yMin: number;
}

/** Averages consecutive points so at most MAX_DRAWN_POINTS remain; returns the drawn interval too. */
function drawnPoints(series: TimeSeries): { points: number[]; intervalMs: number } {
  if (series.points.length <= MAX_DRAWN_POINTS) return { points: series.points, intervalMs: series.intervalMs };
  const bucket = Math.ceil(series.points.length / MAX_DRAWN_POINTS);
  const points: number[] = [];
  for (let i = 0; i < series.points.length; i += bucket) {
    const slice = series.points.slice(i, i + bucket);
    points.push(slice.reduce((a, b) => a + b, 0) / slice.length);
  }
  return { points, intervalMs: series.intervalMs * bucket };
}

function frameFor(series: TimeSeries): Frame {
  const endMs = Math.max(
    series.points.length * series.intervalMs,
    ...series.marks.map((m) => m.atMs),
    ...series.stalls.map((s) => s.toMs),
    1,
  );
  const finite = series.points.filter(Number.isFinite);
  const yMax = niceCeil(Math.max(0, ...finite));
  const yMin = Math.min(0, ...finite);
  const innerW = WIDTH - MARGIN.left - MARGIN.right;
  const innerH = HEIGHT - MARGIN.top - MARGIN.bottom;
  return {
    x: (ms) => MARGIN.left + (Math.max(0, Math.min(ms, endMs)) / endMs) * innerW,
    y: (v) => MARGIN.top + innerH - ((v - yMin) / (yMax - yMin)) * innerH,
    endMs,
    yMax,
    yMin,
  };
}

function timeLabel(ms: number, endMs: number): string {
  return endMs < 5000 ? `${formatValue(ms)} ms` : `${formatValue(ms / 1000)} s`;
}

function axes(frame: Frame, unit: string): string {
  const top = MARGIN.top;
  const bottom = HEIGHT - MARGIN.bottom;
  const left = MARGIN.left;
  const right = WIDTH - MARGIN.right;
  const parts: string[] = [];
  for (const v of niceTicks(frame.yMin, frame.yMax)) {
    const y = coord(frame.y(v));
    parts.push(`<line class="grid" x1="${left}" x2="${right}" y1="${y}" y2="${y}"/>`);
    parts.push(
      `<text class="tick" x="${left - 8}" y="${y}" text-anchor="end" dominant-baseline="middle">${formatValue(v)}</text>`,
    );
  }
  for (const ms of niceTicks(0, frame.endMs, 8)) {
    const x = coord(frame.x(ms));
    parts.push(`<line class="tick-mark" x1="${x}" x2="${x}" y1="${bottom}" y2="${bottom + 5}"/>`);
    parts.push(`<text class="tick" x="${x}" y="${bottom + 18}" text-anchor="middle">${timeLabel(ms, frame.endMs)}</text>`);
  }
  parts.push(`<line class="axis" x1="${left}" x2="${right}" y1="${bottom}" y2="${bottom}"/>`);
  parts.push(`<line class="axis" x1="${left}" x2="${left}" y1="${top}" y2="${bottom}"/>`);
  parts.push(
    `<text class="axis-title" x="${left - 8}" y="${top - 4 - (LABEL_ROWS - 1) * LABEL_ROW_PX}" text-anchor="end">${escapeMarkup(unit)}</text>`,
  );
  return parts.join("");
}

function stepPath(frame: Frame, points: readonly number[], intervalMs: number): { line: string; area: string } {
  if (points.length === 0) return { line: "", area: "" };
  const segments: string[] = [`M${coord(frame.x(0))},${coord(frame.y(points[0] ?? 0))}`];
  points.forEach((v, i) => {
    segments.push(`V${coord(frame.y(Number.isFinite(v) ? v : 0))}`, `H${coord(frame.x((i + 1) * intervalMs))}`);
  });
  const line = segments.join("");
  const base = coord(frame.y(Math.max(0, frame.yMin)));
  const area = `${line}V${base}H${coord(frame.x(0))}Z`;
  return { line, area };
}

function stallBands(frame: Frame, series: TimeSeries): string {
  const top = MARGIN.top;
  const height = HEIGHT - MARGIN.top - MARGIN.bottom;
  return series.stalls
    .map((s) => {
      const x1 = frame.x(s.fromMs);
      const width = Math.max(1, frame.x(s.toMs) - x1);
      const text = `stall ${formatDurationMs(s.toMs - s.fromMs)}`;
      const inside =
        width > text.length * LABEL_CHAR_PX
          ? `<text class="stall-label" x="${coord(x1 + width / 2)}" y="${top + 14}" text-anchor="middle">${escapeMarkup(text)}</text>`
          : "";
      return `<g class="stall"><rect x="${coord(x1)}" y="${top}" width="${coord(width)}" height="${height}"><title>${escapeMarkup(`${text}, ${timeLabel(s.fromMs, frame.endMs)} – ${timeLabel(s.toMs, frame.endMs)}`)}</title></rect>${inside}</g>`;
    })
    .join("");
}

function truncate(label: string): string {
  return label.length <= MAX_LABEL_CHARS ? label : `${label.slice(0, MAX_LABEL_CHARS - 1)}…`;
}

function markLines(frame: Frame, series: TimeSeries): string {
  const bottom = HEIGHT - MARGIN.bottom;
  const right = WIDTH - MARGIN.right;
  // rowEnd[r] is the rightmost pixel a label in row r already covers.
  const rowEnd = new Array<number>(LABEL_ROWS).fill(Number.NEGATIVE_INFINITY);
  const sorted = [...series.marks].sort((a, b) => a.atMs - b.atMs);
  return sorted
    .map((m) => {
      const x = frame.x(m.atMs);
      const text = truncate(m.label);
      const widthPx = text.length * LABEL_CHAR_PX + 6;
      const anchorEnd = x + widthPx > right;
      const from = anchorEnd ? x - widthPx : x;
      let row = rowEnd.findIndex((end) => end < from);
      if (row === -1) row = rowEnd.indexOf(Math.min(...rowEnd));
      rowEnd[row] = from + widthPx;
      // Row 0 sits just above the plot; crowded labels climb.
      const labelY = MARGIN.top - 6 - row * LABEL_ROW_PX;
      const tx = anchorEnd ? x - 3 : x + 3;
      return (
        `<g class="mark ${m.kind}"><line x1="${coord(x)}" x2="${coord(x)}" y1="${coord(labelY + 3)}" y2="${bottom}"/>` +
        `<text x="${coord(tx)}" y="${coord(labelY)}" text-anchor="${anchorEnd ? "end" : "start"}">${escapeMarkup(text)}</text>` +
        `<title>${escapeMarkup(`${m.kind} at ${timeLabel(m.atMs, frame.endMs)}: ${m.label}`)}</title></g>`
      );
    })
    .join("");
}

/** The chart of one series; the caller writes the stall durations and marks out in text beside it. */
export function seriesChartSvg(series: TimeSeries): string {
  const frame = frameFor(series);
  const { points, intervalMs } = drawnPoints(series);
  const { line, area } = stepPath(frame, points, intervalMs);
  const label = `${series.name} (${series.unit}) per ${formatValue(series.intervalMs)} ms`;
  return (
    `<svg class="chart" data-chart="series" viewBox="0 0 ${WIDTH} ${HEIGHT}" role="img" aria-label="${escapeMarkup(label)}" xmlns="http://www.w3.org/2000/svg">` +
    `<title>${escapeMarkup(label)}</title>${stallBands(frame, series)}${axes(frame, series.unit)}` +
    `<path class="series-area" d="${area}"/><path class="series-line" d="${line}"/>${markLines(frame, series)}</svg>`
  );
}
