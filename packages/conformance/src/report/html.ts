// The report as one self-contained HTML file: inline CSS, inline SVG, no
// script and no network, so it opens the same from a CI artifact, a mail
// attachment or a laptop offline. Every string from a check is escaped.

import { escapeMarkup as esc } from "./escape.js";
import {
  elapsedMs,
  formatDurationMs,
  formatLatencyUs,
  formatThreshold,
  formatValue,
  formatWithUnit,
  keyFigure,
  verdictLabel,
} from "./format.js";
import { HTML_STYLE } from "./html-style.js";
import { CURVE_COLORS, latencyChartSvg } from "./latency-chart.js";
import { seriesChartSvg } from "./series-chart.js";
import {
  type CheckResult,
  FAMILIES,
  type Family,
  type Figure,
  type LatencyCurve,
  type Report,
  type TimeSeries,
} from "./types.js";

/** Forbids every fetch and script; the page needs only inline styles and inline SVG. */
const CONTENT_SECURITY_POLICY = "default-src 'none'; style-src 'unsafe-inline'; img-src data:";

const FAMILY_TITLES: Readonly<Record<Family, string>> = {
  ha: "High availability",
  qos: "Quality of service",
  latency: "Latency",
  snapshot: "Snapshots",
};

/** Marks reuse the verdict colours: a fault reads red, a recovery green. */
const MARK_BADGE: Readonly<Record<TimeSeries["marks"][number]["kind"], string>> = {
  fault: "fail",
  recovered: "pass",
  info: "info",
};

function badge(verdict: string): string {
  return `<span class="badge ${esc(verdict)}">${esc(verdictLabel(verdict))}</span>`;
}

function checkAnchor(id: string): string {
  return `check-${id}`;
}

function fact(label: string, value: string): string {
  return `<div><dt>${esc(label)}</dt><dd>${value}</dd></div>`;
}

function runHeader(report: Report): string {
  const env = report.environment;
  const { summary } = report;
  const failed = summary.fail + summary.error > 0;
  const known = report.checks.filter((c) => c.knownFailure !== undefined && c.verdict === "fail").length;
  const targetFacts = Object.entries(env.targetDescription).map(([k, v]) => fact(`target ${k}`, esc(v)));
  const facts = [
    fact("started", esc(report.startedAt)),
    fact("duration", `${esc(formatDurationMs(elapsedMs(report.startedAt, report.finishedAt)))} (${esc(env.duration)} setting)`),
    fact("suites", esc(report.options.suites.join(", "))),
    fact("faults · nodes", `${report.options.faults} · ${report.options.nodes}`),
    fact(
      "profile",
      `${esc(report.options.profileName)}${report.options.profilePath === "" ? "" : ` <code>${esc(report.options.profilePath)}</code>`}`,
    ),
    ...targetFacts,
    fact("kernel", esc(env.kernel)),
    fact("cpu", `${env.cpuCount} × ${esc(env.cpuModel)}`),
    fact("memory", `${formatValue(Math.round((env.memoryBytes / 2 ** 30) * 10) / 10)} GiB`),
    fact("fio · node", `${esc(env.fioVersion)} · ${esc(env.nodeVersion)}`),
    fact("suite", `${esc(env.suiteVersion)} <code>${esc(env.gitCommit)}</code>`),
    fact("root", env.root ? "yes" : "no"),
  ];
  const counts = [
    ["pass", summary.pass, "pass"],
    ["fail", summary.fail, known > 0 ? `fail (${known} known)` : "fail"],
    ["na", summary.notApplicable, "not applicable"],
    ["error", summary.error, "error"],
  ] as const;
  return `<header class="card">
<div class="run-head"><div><div class="kicker">keelson conformance report</div><h1>${esc(env.target)}</h1></div>
<div class="outcome ${failed ? "fail" : "pass"}">${failed ? "failed" : "passed"}</div></div>
<div class="counts">${counts.map(([cls, n, label]) => `<div class="count ${cls}"><b>${n}</b><span>${esc(label)}</span></div>`).join("")}</div>
<dl class="facts">${facts.join("")}</dl>
</header>`;
}

function summarySection(report: Report): string {
  const rows = report.checks.map((c) => {
    const key = keyFigure(c);
    const figure =
      key === undefined
        ? `<span class="empty">none</span>`
        : `${esc(key.name)} <b>${esc(formatWithUnit(key.value, key.unit))}</b>`;
    const threshold = key === undefined ? "" : esc(formatThreshold(key.threshold, key.unit));
    const known =
      c.knownFailure === undefined
        ? ""
        : ` <span class="badge known" title="${esc(c.knownFailure.reason)}">known ${esc(c.knownFailure.issue)}</span>`;
    return `<tr><td><a href="#${esc(encodeURIComponent(checkAnchor(c.id)))}"><code>${esc(c.id)}</code></a><span class="desc">${esc(c.title)}</span></td><td>${badge(c.verdict)}${known}</td><td>${figure}</td><td class="num">${threshold}</td></tr>`;
  });
  const body = rows.length === 0 ? `<tr><td colspan="4" class="empty">No checks ran.</td></tr>` : rows.join("\n");
  return `<section class="card"><h3>Summary</h3><div class="table-wrap"><table>
<thead><tr><th>Check</th><th>Verdict</th><th>Key figure</th><th class="num">Threshold</th></tr></thead>
<tbody>${body}</tbody></table></div></section>`;
}

function figuresTable(figures: readonly Figure[]): string {
  if (figures.length === 0) return "";
  const rows = figures.map((f) => {
    const desc = f.description === undefined ? "" : `<span class="desc">${esc(f.description)}</span>`;
    return `<tr><td><code>${esc(f.name)}</code>${desc}</td><td class="num">${esc(formatValue(f.value))}</td><td>${esc(f.unit)}</td><td class="num">${esc(formatThreshold(f.threshold, f.unit))}</td><td>${esc(f.better)}</td><td>${badge(f.verdict)}</td></tr>`;
  });
  return `<h4>Figures</h4><div class="table-wrap"><table>
<thead><tr><th>Figure</th><th class="num">Value</th><th>Unit</th><th class="num">Threshold</th><th>Better</th><th>Verdict</th></tr></thead>
<tbody>${rows.join("\n")}</tbody></table></div>`;
}

function p99Of(curve: LatencyCurve): number | undefined {
  return curve.percentiles.find((p) => p.percentile === 99)?.latencyUs;
}

function latencyBlock(curves: readonly LatencyCurve[]): string {
  if (curves.length === 0) return "";
  const byProfile = new Map<string, LatencyCurve[]>();
  for (const c of curves) byProfile.set(c.profile, [...(byProfile.get(c.profile) ?? []), c]);
  const charts = [...byProfile].map(([profile, group]) => {
    const sorted = [...group].sort((a, b) => a.replicas - b.replicas);
    const legend = sorted.map((c, i) => {
      const p99 = p99Of(c);
      const tail = p99 === undefined ? "" : ` · p99 ${esc(formatLatencyUs(p99))}`;
      return `<li><span class="swatch" style="background:${CURVE_COLORS[i % CURVE_COLORS.length]}"></span><b>${c.replicas} replica${c.replicas === 1 ? "" : "s"}</b> · ${esc(formatValue(c.iops))} IOPS · ${esc(formatValue(c.mibPerSec))} MiB/s${tail}</li>`;
    });
    return `<figure class="chart-box"><figcaption><code>${esc(profile)}</code></figcaption>${latencyChartSvg(profile, sorted)}<ul class="legend">${legend.join("")}</ul></figure>`;
  });
  return `<h4>Latency percentiles</h4>${charts.join("")}`;
}

function seriesFacts(series: TimeSeries): string {
  const stalls = series.stalls.map(
    (s) =>
      `${esc(formatDurationMs(s.toMs - s.fromMs))} (from ${esc(formatValue(s.fromMs / 1000))} s to ${esc(formatValue(s.toMs / 1000))} s)`,
  );
  const totalMs = series.stalls.reduce((sum, s) => sum + (s.toMs - s.fromMs), 0);
  const stallText =
    series.stalls.length === 0
      ? "No stall: I/O completed in every interval."
      : `<span class="stall-total">Stalled ${esc(formatDurationMs(totalMs))}</span> in ${series.stalls.length} stall${series.stalls.length === 1 ? "" : "s"}: ${stalls.join("; ")}.`;
  const marks = series.marks.map(
    (m) =>
      `<li><b>${esc(formatValue(m.atMs / 1000))} s</b> <span class="badge ${MARK_BADGE[m.kind]}">${esc(m.kind)}</span> ${esc(m.label)}</li>`,
  );
  const markList = marks.length === 0 ? "" : `<ul class="legend">${marks.join("")}</ul>`;
  return `<p class="series-facts">${stallText}</p>${markList}`;
}

function seriesBlock(series: readonly TimeSeries[]): string {
  return series
    .map(
      (s) =>
        `<figure class="chart-box"><figcaption>${esc(s.name)} <span class="desc">(${esc(s.unit)} per ${esc(formatValue(s.intervalMs))} ms)</span></figcaption>${seriesChartSvg(s)}${seriesFacts(s)}</figure>`,
    )
    .join("");
}

function checkArticle(check: CheckResult): string {
  const known =
    check.knownFailure === undefined
      ? ""
      : `<p class="known-failure"><b>Known failure ${esc(check.knownFailure.issue)}:</b> ${esc(check.knownFailure.reason)}</p>`;
  const notes =
    check.notes === undefined || check.notes.length === 0
      ? ""
      : `<h4>Notes</h4><ul class="notes">${check.notes.map((n) => `<li>${esc(n)}</li>`).join("")}</ul>`;
  return `<article class="card check ${esc(check.verdict)}" id="${esc(checkAnchor(check.id))}">
<div class="check-head"><div><h3>${esc(check.title)}</h3><code class="id">${esc(check.id)}</code></div>
<div class="meta"><span>${esc(formatDurationMs(check.durationMs))}</span>${badge(check.verdict)}</div></div>
<p class="message">${esc(check.message)}</p>${known}
${figuresTable(check.figures)}${notes}${seriesBlock(check.series)}${latencyBlock(check.latency)}
</article>`;
}

function familySection(family: Family, checks: readonly CheckResult[]): string {
  const passed = checks.filter((c) => c.verdict === "pass").length;
  return `<section id="family-${family}"><h2>${esc(FAMILY_TITLES[family])} <span class="sub">${family} · ${passed} of ${checks.length} passed</span></h2>
${checks.map(checkArticle).join("\n")}</section>`;
}

/**
 * Renders a report as one HTML document. Pure; does not validate (see
 * writeReport). Families appear in the order of {@link FAMILIES}.
 */
export function renderHtml(report: Report): string {
  const families = FAMILIES.map((f) => [f, report.checks.filter((c) => c.family === f)] as const).filter(
    ([, cs]) => cs.length > 0,
  );
  const nav = families.map(([f, cs]) => `<a href="#family-${f}">${esc(FAMILY_TITLES[f])} (${cs.length})</a>`).join("");
  const title = `keelson conformance: ${report.environment.target}, ${report.startedAt}`;
  return `<!doctype html>
<html lang="en">
<head>
<meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<meta http-equiv="Content-Security-Policy" content="${CONTENT_SECURITY_POLICY}">
<link rel="icon" href="data:,">
<title>${esc(title)}</title>
<style>${HTML_STYLE}</style>
</head>
<body>
<main>
${runHeader(report)}
<nav class="families">${nav}</nav>
${summarySection(report)}
${families.map(([f, cs]) => familySection(f, cs)).join("\n")}
<footer>report schema ${report.schemaVersion} · generated by @keelson/conformance ${esc(report.environment.suiteVersion)}</footer>
</main>
</body>
</html>
`;
}
