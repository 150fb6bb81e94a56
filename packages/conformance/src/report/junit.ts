// The report as JUnit XML for CI dashboards: a testsuite per family, a
// testcase per check. Verdicts map to JUnit's vocabulary: fail -> <failure>,
// error -> <error>, not-applicable -> <skipped>.

import { escapeMarkup as esc } from "./escape.js";
import { formatDurationMs, formatLatencyUs, formatThreshold, formatValue } from "./format.js";
import { type CheckResult, FAMILIES, type Family, type Report } from "./types.js";

/** The JUnit classname prefix; a family's checks are `keelson-conformance.<family>`. */
export const JUNIT_CLASS_PREFIX = "keelson-conformance";

/** JUnit `time` attributes are seconds. */
function seconds(durationMs: number): string {
  return (Math.max(0, durationMs) / 1000).toFixed(3);
}

/** The figures and context of a check as plain lines for <system-out>, which CI tools show verbatim. */
export function checkDetailLines(check: CheckResult): string[] {
  const lines = check.figures.map((f) => {
    const threshold = formatThreshold(f.threshold, f.unit);
    return `${f.name} = ${formatValue(f.value)}${f.unit === "" ? "" : ` ${f.unit}`}${threshold === "" ? "" : ` (threshold ${threshold})`} [${f.verdict}]`;
  });
  for (const s of check.series) {
    const stalledMs = s.stalls.reduce((sum, st) => sum + (st.toMs - st.fromMs), 0);
    lines.push(
      `series ${s.name}: ${s.points.length} points of ${s.intervalMs} ms, ${s.stalls.length} stall(s) totalling ${formatDurationMs(stalledMs)}`,
    );
  }
  for (const c of check.latency) {
    const p99 = c.percentiles.find((p) => p.percentile === 99)?.latencyUs;
    const tail = p99 === undefined ? "" : `, p99 ${formatLatencyUs(p99)}`;
    lines.push(`latency ${c.profile} r${c.replicas}: ${formatValue(c.iops)} IOPS, ${formatValue(c.mibPerSec)} MiB/s${tail}`);
  }
  for (const n of check.notes ?? []) lines.push(`note: ${n}`);
  if (check.knownFailure !== undefined) lines.push(`known failure ${check.knownFailure.issue}: ${check.knownFailure.reason}`);
  return lines;
}

function outcomeElement(check: CheckResult): string {
  const message =
    check.knownFailure === undefined ? check.message : `[known failure ${check.knownFailure.issue}] ${check.message}`;
  // The attribute holds the first line, as CI tools show it as a headline; the body holds all of it.
  const headline = message.split("\n", 1)[0] ?? "";
  switch (check.verdict) {
    case "pass":
      return "";
    case "fail":
      return `\n      <failure message="${esc(headline)}" type="fail">${esc(message)}</failure>`;
    case "error":
      return `\n      <error message="${esc(headline)}" type="error">${esc(message)}</error>`;
    case "not-applicable":
      return `\n      <skipped message="${esc(headline)}"/>`;
  }
}

function testcase(check: CheckResult): string {
  const lines = checkDetailLines(check);
  const out = lines.length === 0 ? "" : `\n      <system-out>${esc(lines.join("\n"))}</system-out>`;
  return `    <testcase classname="${JUNIT_CLASS_PREFIX}.${check.family}" name="${esc(check.id)}" time="${seconds(check.durationMs)}">${outcomeElement(check)}${out}\n    </testcase>`;
}

interface Tally {
  tests: number;
  failures: number;
  errors: number;
  skipped: number;
  timeMs: number;
}

function tally(checks: readonly CheckResult[]): Tally {
  return {
    tests: checks.length,
    failures: checks.filter((c) => c.verdict === "fail").length,
    errors: checks.filter((c) => c.verdict === "error").length,
    skipped: checks.filter((c) => c.verdict === "not-applicable").length,
    timeMs: checks.reduce((sum, c) => sum + c.durationMs, 0),
  };
}

function tallyAttributes(t: Tally): string {
  return `tests="${t.tests}" failures="${t.failures}" errors="${t.errors}" skipped="${t.skipped}" time="${seconds(t.timeMs)}"`;
}

function testsuite(report: Report, family: Family, checks: readonly CheckResult[]): string {
  const first = checks[0]?.startedAt ?? report.startedAt;
  const properties = [
    ["target", report.environment.target],
    ["profile", report.options.profileName],
    ["duration", report.environment.duration],
    ["suiteVersion", report.environment.suiteVersion],
    ["gitCommit", report.environment.gitCommit],
  ]
    .map(([name, value]) => `      <property name="${esc(name ?? "")}" value="${esc(value ?? "")}"/>`)
    .join("\n");
  return `  <testsuite name="${JUNIT_CLASS_PREFIX}.${family}" ${tallyAttributes(tally(checks))} timestamp="${esc(first)}">
    <properties>
${properties}
    </properties>
${checks.map(testcase).join("\n")}
  </testsuite>`;
}

/** Renders a report as a JUnit XML document (UTF-8). Pure; families without checks get no testsuite. */
export function renderJunit(report: Report): string {
  const suites = FAMILIES.map((f) => [f, report.checks.filter((c) => c.family === f)] as const).filter(([, cs]) => cs.length > 0);
  return `<?xml version="1.0" encoding="UTF-8"?>
<testsuites name="${JUNIT_CLASS_PREFIX}" ${tallyAttributes(tally(report.checks))}>
${suites.map(([f, cs]) => testsuite(report, f, cs)).join("\n")}
</testsuites>
`;
}
