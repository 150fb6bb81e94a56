import { describe, expect, it } from "vitest";
import { renderHtml } from "./html.js";
import { sampleReport } from "./sample.js";
import { MAX_DRAWN_POINTS } from "./series-chart.js";
import type { Report } from "./types.js";

const HOSTILE = `<img src=x onerror="alert(1)"> & 'quoted' </p><script>alert(2)</script>`;

/** Undoes escapeMarkup, to read back what a person sees in the page. */
function decodeMarkup(html: string): string {
  return html
    .replace(/&lt;/g, "<")
    .replace(/&gt;/g, ">")
    .replace(/&quot;/g, '"')
    .replace(/&#39;/g, "'")
    .replace(/&amp;/g, "&");
}

function hostileReport(): Report {
  const report = sampleReport();
  const check = report.checks[0]!;
  check.title = `Title ${HOSTILE}`;
  check.message = `Message ${HOSTILE}`;
  check.figures[0]!.name = `fig${HOSTILE}`;
  check.series[0]!.marks[0]!.label = `mark ${HOSTILE}`;
  check.notes = [`note ${HOSTILE}`];
  report.environment.target = `target ${HOSTILE}`;
  return report;
}

function count(haystack: string, needle: string): number {
  return haystack.split(needle).length - 1;
}

describe("renderHtml", () => {
  it("text from checks is escaped: no markup of theirs survives, and it reads back unchanged", () => {
    const html = renderHtml(hostileReport());
    expect(html).not.toContain("<img");
    expect(html).not.toContain("<script");
    expect(html).toContain("&lt;script&gt;alert(2)&lt;/script&gt;");
    const message = /<p class="message">([^<]*)<\/p>/.exec(html)?.[1];
    expect(decodeMarkup(message ?? "")).toBe(`Message ${HOSTILE}`);
  });

  it("tool output: ANSI colour codes and forbidden control characters do not reach the page", () => {
    const report = sampleReport();
    report.checks[0]!.message = "\x1b[31mred\x1b[0m bell\x07 ok";
    const html = renderHtml(report);
    const message = /<p class="message">([^<]*)<\/p>/.exec(html)?.[1];
    expect(message).toBe("red bell\ufffd ok");
  });

  it("one <svg> per time series and per (check, latency profile)", () => {
    const report = sampleReport();
    const html = renderHtml(report);
    const series = report.checks.reduce((n, c) => n + c.series.length, 0);
    const profiles = report.checks.reduce((n, c) => n + new Set(c.latency.map((l) => l.profile)).size, 0);
    expect(series).toBe(1);
    expect(profiles).toBe(2);
    expect(count(html, 'data-chart="series"')).toBe(series);
    expect(count(html, 'data-chart="latency"')).toBe(profiles);
    expect(count(html, "<svg")).toBe(series + profiles);
  });

  it("a series chart marks every fault and stall, and the stall's duration is written out", () => {
    const report = sampleReport();
    const series = report.checks[0]!.series[0]!;
    const html = renderHtml(report);
    const svg = /<svg[^>]*data-chart="series"[\s\S]*?<\/svg>/.exec(html)?.[0] ?? "";
    expect(count(svg, '<g class="mark ')).toBe(series.marks.length);
    expect(count(svg, '<g class="stall">')).toBe(series.stalls.length);
    expect(html).toContain("Stalled 2.5 s</span> in 1 stall");
  });

  it("a latency chart draws one line per replica count with the nines ticks", () => {
    const html = renderHtml(sampleReport());
    const svg = /<svg[^>]*data-chart="latency"[\s\S]*?<\/svg>/.exec(html)?.[0] ?? "";
    expect(count(svg, "<polyline")).toBe(2);
    for (const tick of [">p50<", ">p90<", ">p99<", ">p99.9<", ">p99.99<"]) expect(svg).toContain(tick);
  });

  it("is self-contained: no script, no external reference, a CSP that forbids fetching", () => {
    const html = renderHtml(sampleReport());
    expect(html).not.toMatch(/<script|<link[^>]+href="http|src="http|@import|url\(/i);
    expect(html).toContain(`content="default-src 'none'; style-src 'unsafe-inline'; img-src data:"`);
  });

  it("the summary table has a row per check, linked to its section", () => {
    const report = sampleReport();
    const html = renderHtml(report);
    for (const c of report.checks) {
      expect(html).toContain(`href="#check-${c.id}"`);
      expect(html).toContain(`id="check-${c.id}"`);
    }
  });

  it("degenerate data (empty or all-zero series, crowded marks, zero latency, p100) draws no NaN or Infinity", () => {
    const report = sampleReport();
    const check = report.checks[0]!;
    const marks = Array.from({ length: 12 }, (_, i) => ({
      atMs: 1000,
      label: `fault number ${i} with a long label that gets cut`,
      kind: "fault" as const,
    }));
    check.series = [
      { name: "empty", unit: "IOPS", intervalMs: 1000, points: [], marks: [], stalls: [] },
      { name: "zeros", unit: "IOPS", intervalMs: 250, points: [0, 0, 0], marks, stalls: [{ fromMs: 0, toMs: 750 }] },
      {
        name: "long",
        unit: "IOPS",
        intervalMs: 10,
        points: Array.from({ length: 10_000 }, (_, i) => i % 7),
        marks: [],
        stalls: [],
      },
    ];
    check.latency = [
      { profile: "odd", replicas: 2, iops: 0, mibPerSec: 0, percentiles: [{ percentile: 100, latencyUs: 0 }] },
      { profile: "odd", replicas: 1, iops: 0, mibPerSec: 0, percentiles: [{ percentile: 50, latencyUs: 0 }] },
    ];
    const html = renderHtml(report);
    expect(html).not.toMatch(/NaN|Infinity/);
    expect(count(html, 'data-chart="series"')).toBe(3);
    // The 10,000-point series is averaged down: its path stays far below one segment per point.
    const long = /aria-label="long[\s\S]*?class="series-line" d="([^"]*)"/.exec(html)?.[1] ?? "";
    expect(count(long, "H")).toBeGreaterThan(100);
    expect(count(long, "H")).toBeLessThanOrEqual(MAX_DRAWN_POINTS);
  });

  it("a report without checks still renders", () => {
    const report = { ...sampleReport(), checks: [], summary: { pass: 0, fail: 0, notApplicable: 0, error: 0 } };
    expect(renderHtml(report)).toContain("No checks ran.");
  });
});
