// The report page's stylesheet, inlined into <style>: the file must open
// offline and from CI artifacts, so nothing is fetched (no fonts, no CDN).

/** Verdict colours: text on tinted background, each pair above 4.5:1 contrast. */
export const HTML_STYLE = `
:root {
  --fg: #0f172a; --muted: #5b6b82; --line: #e2e8f0; --bg: #f4f6f9; --card: #ffffff; --code-bg: #f1f5f9;
  --pass: #166534; --pass-bg: #dcfce7; --fail: #b91c1c; --fail-bg: #fee2e2;
  --na: #475569; --na-bg: #e2e8f0; --error: #9a3412; --error-bg: #ffedd5;
  --info: #1e40af; --info-bg: #dbeafe;
}
* { box-sizing: border-box; }
html { -webkit-text-size-adjust: 100%; }
body {
  margin: 0; background: var(--bg); color: var(--fg);
  font: 14px/1.55 system-ui, -apple-system, "Segoe UI", Roboto, "Helvetica Neue", "DejaVu Sans", Arial, sans-serif;
}
main { max-width: 1120px; margin: 0 auto; padding: 28px 24px 48px; }
h1 { font-size: 24px; line-height: 1.25; margin: 0; letter-spacing: -0.01em; }
h2 { font-size: 18px; margin: 36px 0 4px; display: flex; align-items: baseline; gap: 12px; }
h2 .sub { font-size: 13px; font-weight: 400; color: var(--muted); }
h3 { font-size: 15px; margin: 0; }
h4 { font-size: 12px; margin: 18px 0 6px; color: var(--muted); text-transform: uppercase; letter-spacing: 0.05em; }
a { color: inherit; text-decoration: none; }
a:hover { text-decoration: underline; }
code, .mono { font-family: ui-monospace, "SFMono-Regular", Menlo, Consolas, "DejaVu Sans Mono", monospace; font-size: 12.5px; }
.card { background: var(--card); border: 1px solid var(--line); border-radius: 10px; padding: 18px 22px; margin: 16px 0; }
.run-head { display: flex; justify-content: space-between; align-items: flex-start; gap: 16px; flex-wrap: wrap; }
.run-head .kicker { color: var(--muted); font-size: 12px; text-transform: uppercase; letter-spacing: 0.08em; margin-bottom: 4px; }
.outcome { font-size: 13px; font-weight: 700; letter-spacing: 0.06em; text-transform: uppercase; padding: 6px 14px; border-radius: 8px; }
.outcome.pass { color: var(--pass); background: var(--pass-bg); }
.outcome.fail { color: var(--fail); background: var(--fail-bg); }
.counts { display: flex; gap: 10px; flex-wrap: wrap; margin-top: 14px; }
.count { border: 1px solid var(--line); border-radius: 8px; padding: 6px 14px; min-width: 92px; }
.count b { display: block; font-size: 20px; line-height: 1.2; font-variant-numeric: tabular-nums; }
.count span { font-size: 12px; color: var(--muted); }
.count.pass b { color: var(--pass); } .count.fail b { color: var(--fail); }
.count.na b { color: var(--na); } .count.error b { color: var(--error); }
.facts { display: grid; grid-template-columns: repeat(auto-fill, minmax(230px, 1fr)); gap: 10px 28px; margin: 16px 0 0; }
.facts div { min-width: 0; }
.facts dt { font-size: 11.5px; color: var(--muted); text-transform: uppercase; letter-spacing: 0.05em; }
.facts dd { margin: 0; overflow-wrap: anywhere; }
nav.families { margin-top: 16px; display: flex; gap: 6px; flex-wrap: wrap; font-size: 13px; }
nav.families a { border: 1px solid var(--line); border-radius: 999px; padding: 2px 12px; background: var(--card); }
.table-wrap { overflow-x: auto; }
table { width: 100%; border-collapse: collapse; font-variant-numeric: tabular-nums; }
th, td { text-align: left; padding: 7px 10px; border-bottom: 1px solid var(--line); vertical-align: top; overflow-wrap: anywhere; }
th { font-size: 11.5px; font-weight: 600; color: var(--muted); text-transform: uppercase; letter-spacing: 0.05em; white-space: nowrap; }
tbody tr:last-child td { border-bottom: none; }
td.num, th.num { text-align: right; white-space: nowrap; }
td .desc { display: block; color: var(--muted); font-size: 12.5px; }
.badge {
  display: inline-block; padding: 1px 9px; border-radius: 999px; font-size: 11.5px; font-weight: 700;
  text-transform: uppercase; letter-spacing: 0.04em; white-space: nowrap;
}
.badge.pass { color: var(--pass); background: var(--pass-bg); }
.badge.fail { color: var(--fail); background: var(--fail-bg); }
.badge.not-applicable { color: var(--na); background: var(--na-bg); }
.badge.error { color: var(--error); background: var(--error-bg); }
.badge.info { color: var(--info); background: var(--info-bg); }
.badge.known { color: var(--fail); background: transparent; border: 1px solid currentColor; }
article.check { border-left: 5px solid var(--na); }
article.check.pass { border-left-color: #22c55e; }
article.check.fail { border-left-color: #ef4444; }
article.check.error { border-left-color: #f97316; }
.check-head { display: flex; justify-content: space-between; gap: 12px; align-items: flex-start; flex-wrap: wrap; }
.check-head .id { color: var(--muted); }
.check-head .meta { color: var(--muted); font-size: 12.5px; display: flex; gap: 10px; align-items: center; }
.message { white-space: pre-wrap; overflow-wrap: anywhere; background: var(--code-bg); border-radius: 6px; padding: 8px 12px; margin: 12px 0 0; }
.known-failure { margin: 10px 0 0; color: var(--fail); font-size: 13px; }
ul.notes { margin: 0; padding-left: 20px; }
figure.chart-box { margin: 10px 0 0; }
figure.chart-box figcaption { font-size: 13px; font-weight: 600; margin-bottom: 4px; }
svg.chart { display: block; width: 100%; max-width: 760px; height: auto; }
svg.chart .grid { stroke: #edf0f4; stroke-width: 1; }
svg.chart .grid.major { stroke: #d9dee6; }
svg.chart .axis { stroke: #94a3b8; stroke-width: 1; }
svg.chart .tick-mark { stroke: #94a3b8; }
svg.chart text { font-family: inherit; font-size: 11px; fill: var(--muted); }
svg.chart .axis-title { font-size: 11.5px; fill: var(--fg); }
svg.chart .series-line { fill: none; stroke: #0072B2; stroke-width: 1.6; stroke-linejoin: round; }
svg.chart .series-area { fill: #0072B2; fill-opacity: 0.08; stroke: none; }
svg.chart .stall rect { fill: #ef4444; fill-opacity: 0.14; }
svg.chart .stall-label { fill: var(--fail); font-weight: 600; }
svg.chart .mark line { stroke-width: 1.4; stroke-dasharray: 4 3; }
svg.chart .mark.fault line { stroke: #dc2626; } svg.chart .mark.fault text { fill: #b91c1c; }
svg.chart .mark.recovered line { stroke: #16a34a; } svg.chart .mark.recovered text { fill: #166534; }
svg.chart .mark.info line { stroke: #64748b; } svg.chart .mark.info text { fill: #475569; }
svg.chart .mark text { font-weight: 600; }
.legend { display: flex; flex-wrap: wrap; gap: 6px 18px; font-size: 12.5px; margin: 6px 0 0; padding: 0; list-style: none; }
.legend .swatch { display: inline-block; width: 14px; height: 3px; border-radius: 2px; vertical-align: middle; margin-right: 6px; }
.series-facts { font-size: 13px; margin: 6px 0 0; }
.series-facts .stall-total { color: var(--fail); font-weight: 600; }
.empty { color: var(--muted); font-style: italic; }
footer { color: var(--muted); font-size: 12px; margin-top: 32px; text-align: center; }
@media print {
  body { background: #fff; }
  .card { break-inside: avoid; border-color: #ccc; }
}
`;
