import { describe, expect, it } from "vitest";
import type { FioResult } from "../../fio/types.js";
import { percentileUs, settle } from "./load.js";

function result(percentiles: { percentile: number; latencyUs: number }[]): FioResult {
  const side = { iops: 100, bytesPerSec: 409600, ioBytes: 409600, meanUs: 100, maxUs: 300, percentiles };
  return {
    read: side,
    write: { ...side, iops: 0, percentiles: [] },
    errors: 0,
    iopsPerSecond: [100],
    durationMs: 1000,
    startedAtMs: 0,
    cpuPercent: null,
  };
}

describe("percentileUs", () => {
  it("a percentile fio reported is read off its table", () => {
    expect(percentileUs(result([{ percentile: 99, latencyUs: 250 }]), 99)).toBe(250);
  });

  it("a percentile fio did not report is NaN (not measured), never 0", () => {
    expect(percentileUs(result([{ percentile: 50, latencyUs: 90 }]), 99)).toBeNaN();
    expect(percentileUs(result([{ percentile: 99, latencyUs: 250 }]), 99, "write")).toBeNaN();
  });
});

describe("settle", () => {
  it("a figure that could not be measured stays unmeasured (NaN, left out of the report by the judge) and is a violation", () => {
    const out = settle({
      figures: [
        { name: "victimP99Ratio", value: Number.NaN, unit: "ratio", better: "lower", description: "" },
        { name: "victimIops", value: 10, unit: "IOPS", better: "higher", description: "" },
      ],
    });
    expect(out.figures[0]?.value).toBeNaN();
    expect(out.figures[1]?.value).toBe(10);
    expect(out.violations).toEqual([expect.stringMatching(/^victimP99Ratio could not be measured/)]);
  });
});
