import { describe, expect, it } from "vitest";
import { sampleReport } from "../report/sample.js";
import type { Better, Report } from "../report/types.js";
import { compareReports, judgeChange, p99Us } from "./compare.js";
import { renderComparison } from "./render.js";

const BOUND = { maxRegressionPct: 10 };

/** The sample with every latency of the randread r3 curve scaled by `factor`. */
function withSlowerP99(factor: number): Report {
  const report = sampleReport();
  const curve = report.checks
    .find((c) => c.id === "latency.percentiles")!
    .latency.find((l) => l.profile === "randread-4k-qd1" && l.replicas === 3)!;
  curve.percentiles = curve.percentiles.map((p) => ({ ...p, latencyUs: p.latencyUs * factor }));
  return report;
}

function figure(report: Report, checkId: string, name: string) {
  return report.checks.find((c) => c.id === checkId)!.figures.find((f) => f.name === name)!;
}

describe("compareReports", () => {
  it("equal reports: ok, no regression, every figure within", () => {
    const comparison = compareReports(sampleReport(), sampleReport(), BOUND);
    expect(comparison.ok).toBe(true);
    expect(comparison.regressions).toEqual([]);
    expect(comparison.verdicts).toEqual([]);
    expect(new Set(comparison.figures.map((f) => f.status))).toEqual(new Set(["within"]));
    // Own figures plus p99Us and iops for each of the four curves.
    const own = sampleReport().checks.reduce((n, c) => n + c.figures.length, 0);
    expect(comparison.figures).toHaveLength(own + 8);
  });

  it("a 20% worse p99 with a 10% bound: the gate fails naming the curve", () => {
    const comparison = compareReports(sampleReport(), withSlowerP99(1.2), BOUND);
    expect(comparison.ok).toBe(false);
    expect(comparison.regressions).toHaveLength(1);
    expect(comparison.regressions[0]).toMatch(
      /^latency\.percentiles latency\.randread-4k-qd1\.r3\.p99Us: 560 -> 672 us \(\+20\.0%; lower is better\)$/,
    );
    const row = comparison.figures.find((f) => f.figure === "latency.randread-4k-qd1.r3.p99Us")!;
    expect(row.status).toBe("regressed");
    expect(row.changePct).toBeCloseTo(20, 6);
  });

  it("a 5% worse p99 with a 10% bound: within, the gate passes", () => {
    const comparison = compareReports(sampleReport(), withSlowerP99(1.05), BOUND);
    expect(comparison.ok).toBe(true);
    expect(comparison.figures.find((f) => f.figure === "latency.randread-4k-qd1.r3.p99Us")!.status).toBe("within");
  });

  it("a 20% better p99 is an improvement, not a regression", () => {
    const comparison = compareReports(sampleReport(), withSlowerP99(0.8), BOUND);
    expect(comparison.ok).toBe(true);
    expect(comparison.figures.find((f) => f.figure === "latency.randread-4k-qd1.r3.p99Us")!.status).toBe("improved");
  });

  it("IOPS of a curve is higher-better: a 20% drop regresses", () => {
    const current = sampleReport();
    current.checks.find((c) => c.id === "latency.percentiles")!.latency[0]!.iops *= 0.8;
    const comparison = compareReports(sampleReport(), current, BOUND);
    expect(comparison.regressions).toEqual([
      expect.stringMatching(/^latency\.percentiles latency\.randread-4k-qd1\.r1\.iops: 9,800 -> 7,840 IOPS \(-20\.0%/),
    ]);
  });

  it("a verdict from pass to fail regresses even when no figure moved beyond the bound", () => {
    const current = sampleReport();
    current.checks[0]!.verdict = "fail";
    const comparison = compareReports(sampleReport(), current, BOUND);
    expect(comparison.ok).toBe(false);
    expect(comparison.verdicts).toEqual([{ checkId: "ha.replica-loss", baseline: "pass", current: "fail", regression: true }]);
    expect(comparison.regressions).toEqual(["ha.replica-loss: verdict pass -> fail"]);
  });

  it("pass to error regresses (an error hides the figures); fail to pass does not", () => {
    const baseline = sampleReport();
    const current = sampleReport();
    current.checks[0]!.verdict = "error";
    current.checks[0]!.figures = [];
    current.checks[1]!.verdict = "pass";
    const comparison = compareReports(baseline, current, BOUND);
    expect(comparison.verdicts.map((v) => [v.checkId, v.regression])).toEqual([
      ["ha.replica-loss", true],
      ["ha.partition", false],
    ]);
    expect(comparison.figures.filter((f) => f.status === "removed").map((f) => f.figure)).toEqual([
      "stallMs",
      "lostWrites",
      "iopsAfterRecovery",
    ]);
  });

  it("figures and checks in one report only are added/removed, never regressions", () => {
    const baseline = sampleReport();
    const current = sampleReport();
    current.checks[0]!.figures.push({ name: "newMs", value: 1, unit: "ms", better: "lower", verdict: "info" });
    baseline.checks[2]!.figures.push({ name: "oldRatio", value: 1, unit: "ratio", better: "higher", verdict: "info" });
    current.checks.pop();
    const comparison = compareReports(baseline, current, BOUND);
    expect(comparison.ok).toBe(true);
    const statusOf = (name: string) => comparison.figures.find((f) => f.figure === name)?.status;
    expect(statusOf("newMs")).toBe("added");
    expect(statusOf("oldRatio")).toBe("removed");
    expect(comparison.verdicts).toEqual([
      { checkId: "snapshot.crash-consistency", baseline: "not-applicable", current: undefined, regression: false },
    ]);
  });

  it("a figure whose unit changed is incomparable, not judged", () => {
    const current = sampleReport();
    const f = figure(current, "ha.replica-loss", "stallMs");
    f.unit = "s";
    f.value = 10;
    const comparison = compareReports(sampleReport(), current, BOUND);
    expect(comparison.ok).toBe(true);
    expect(comparison.figures.find((r) => r.figure === "stallMs" && r.checkId === "ha.replica-loss")!.status).toBe(
      "incomparable",
    );
  });

  it("lostWrites 0 -> 1 regresses: a zero baseline has no percentage, any rise counts", () => {
    const current = sampleReport();
    figure(current, "ha.replica-loss", "lostWrites").value = 1;
    const comparison = compareReports(sampleReport(), current, BOUND);
    expect(comparison.ok).toBe(false);
    const row = comparison.figures.find((r) => r.figure === "lostWrites" && r.checkId === "ha.replica-loss")!;
    expect(row.status).toBe("regressed");
    expect(row.changePct).toBeUndefined();
    expect(comparison.regressions).toEqual(["ha.replica-loss lostWrites: 0 -> 1 count (from 0; lower is better)"]);
  });

  it("repeated figure names are compared pairwise, not dropped", () => {
    const baseline = sampleReport();
    const current = sampleReport();
    for (const [r, v] of [
      [baseline, 100],
      [current, 50],
    ] as const) {
      r.checks[0]!.figures.push({ name: "stallMs", value: v, unit: "ms", better: "lower", verdict: "info" });
    }
    const row = compareReports(baseline, current, BOUND).figures.find((f) => f.figure === "stallMs#2")!;
    expect(row).toMatchObject({ baseline: 100, current: 50, status: "improved" });
  });

  it("a negative or non-finite bound is refused", () => {
    expect(() => compareReports(sampleReport(), sampleReport(), { maxRegressionPct: -1 })).toThrow(
      expect.objectContaining({ code: "INVALID_ARGUMENT" }),
    );
    expect(() => compareReports(sampleReport(), sampleReport(), { maxRegressionPct: Number.NaN })).toThrow(
      /maxRegressionPct NaN/,
    );
  });
});

describe("judgeChange", () => {
  const cases: [number, number, Better, string][] = [
    [100, 89, "higher", "regressed"],
    [100, 90, "higher", "within"],
    [100, 111, "higher", "improved"],
    [100, 111, "lower", "regressed"],
    [100, 110, "lower", "within"],
    [100, 80, "lower", "improved"],
    [100, 1, "none", "unjudged"],
    [-100, -120, "higher", "regressed"],
    [0, 1e-12, "lower", "within"],
    [0, 1e-6, "lower", "regressed"],
    [0, 5, "higher", "improved"],
    [0, -5, "higher", "regressed"],
    [0, 0, "lower", "within"],
  ];
  it.each(cases)("%d -> %d, %s is better: %s", (baseline, current, better, status) => {
    expect(judgeChange(baseline, current, better, 10).status).toBe(status);
  });
});

describe("p99Us", () => {
  it("uses the recorded p99", () => {
    expect(p99Us({ profile: "p", replicas: 1, iops: 1, mibPerSec: 1, percentiles: [{ percentile: 99, latencyUs: 7 }] })).toBe(7);
  });

  it("interpolates on the nines scale when p99 is not recorded, and gives up outside the curve", () => {
    const percentiles = [
      { percentile: 90, latencyUs: 100 },
      { percentile: 99.9, latencyUs: 300 },
    ];
    // p99 is two nines, halfway between one (p90) and three (p99.9).
    expect(p99Us({ profile: "p", replicas: 1, iops: 1, mibPerSec: 1, percentiles })).toBeCloseTo(200, 9);
    expect(p99Us({ profile: "p", replicas: 1, iops: 1, mibPerSec: 1, percentiles: percentiles.slice(0, 1) })).toBeUndefined();
  });
});

describe("renderComparison", () => {
  it("equal reports: a clean table and a passing verdict line", () => {
    const text = renderComparison(compareReports(sampleReport(), sampleReport(), BOUND), { color: false });
    expect(text).not.toContain("\x1b");
    expect(text.split("\n")[0]).toMatch(/^CHECK\s+FIGURE\s+BASELINE\s+CURRENT\s+CHANGE\s+STATUS$/);
    expect(text).toMatch(/No regression beyond 10% \(\d+ figures compared\)\.\n$/);
  });

  it("a regression: the row shows both values, the change and the status, then the list", () => {
    const text = renderComparison(compareReports(sampleReport(), withSlowerP99(1.2), BOUND), { color: false });
    expect(text).toMatch(/latency\.percentiles\s+latency\.randread-4k-qd1\.r3\.p99Us\s+560 us\s+672 us\s+\+20\.0%\s+regressed/);
    expect(text).toContain("1 regression beyond 10%:\n  latency.percentiles latency.randread-4k-qd1.r3.p99Us");
  });

  it("with colour: the regression is painted red", () => {
    const text = renderComparison(compareReports(sampleReport(), withSlowerP99(1.2), BOUND), { color: true });
    expect(text).toContain("\x1b[31m");
  });
});

describe("compareReports: what the gate must not let through", () => {
  it("a check that passed and is now not applicable, or gone, is a regression", () => {
    const base = sampleReport();
    const passed = base.checks.find((c) => c.verdict === "pass");
    if (!passed) throw new Error("the sample report has a passing check");
    const na = structuredClone(base);
    const c = na.checks.find((x) => x.id === passed.id);
    if (c) c.verdict = "not-applicable";
    expect(compareReports(base, na, { maxRegressionPct: 10 }).regressions.join("\n")).toMatch(
      new RegExp(`${passed.id}: verdict pass -> not-applicable`),
    );
    const gone = structuredClone(base);
    gone.checks = gone.checks.filter((x) => x.id !== passed.id);
    expect(compareReports(base, gone, { maxRegressionPct: 10 }).ok).toBe(false);
  });

  it("runs made differently (duration, nodes, faults, target) are refused as a regression, naming the difference", () => {
    const base = sampleReport();
    const other = structuredClone(base);
    other.environment.duration = other.environment.duration === "short" ? "standard" : "short";
    const r = compareReports(base, other, { maxRegressionPct: 10 });
    expect(r.ok).toBe(false);
    expect(r.regressions[0]).toMatch(/runs differ: duration/);
  });
});
