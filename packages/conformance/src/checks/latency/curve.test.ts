import { describe, expect, it } from "vitest";
import type { FioSideResult } from "../../fio/types.js";
import { latencyAt, mergePercentiles } from "./curve.js";

const PCTS = [1, 5, 10, 20, 30, 40, 50, 60, 70, 80, 90, 95, 99, 99.5, 99.9, 99.95, 99.99];

/** A side whose latency is uniform on [fromUs, toUs]. */
function uniform(iops: number, fromUs: number, toUs: number): FioSideResult {
  const at = (p: number) => fromUs + ((toUs - fromUs) * p) / 100;
  return {
    iops,
    bytesPerSec: iops * 4096,
    ioBytes: iops * 4096,
    meanUs: (fromUs + toUs) / 2,
    maxUs: toUs,
    percentiles: PCTS.map((percentile) => ({ percentile, latencyUs: at(percentile) })),
  };
}

describe("mergePercentiles", () => {
  it("one side alone is returned as fio reported it", () => {
    const side = uniform(100, 100, 200);
    expect(mergePercentiles([side, uniform(0, 0, 0)])).toEqual(side.percentiles);
  });

  it("reads and writes merge by count: 70% fast reads, 30% slow writes", () => {
    // Reads uniform on 100..200 us, writes uniform on 1000..2000 us.
    const merged = mergePercentiles([uniform(700, 100, 200), uniform(300, 1000, 2000)]);
    const at = (p: number) => merged.find((x) => x.percentile === p)?.latencyUs ?? Number.NaN;
    // The median is a read: 50/70 of the way through 100..200.
    expect(at(50)).toBeCloseTo(100 + (100 * 50) / 70, 0);
    // p99 is a write: (99 - 70)/30 of the way through 1000..2000.
    expect(at(99)).toBeCloseTo(1000 + (1000 * 29) / 30, 0);
    // Percentiles stay ascending.
    for (let i = 1; i < merged.length; i++) expect(merged[i]?.latencyUs).toBeGreaterThanOrEqual(merged[i - 1]?.latencyUs ?? 0);
  });
});

describe("latencyAt", () => {
  const curve = { profile: "p", replicas: 1, iops: 10, mibPerSec: 1, percentiles: [{ percentile: 50, latencyUs: 120 }] };

  it("a percentile fio reported is read off the curve", () => {
    expect(latencyAt(curve, 50)).toBe(120);
  });

  it("a percentile fio did not report is NaN (not measured), never 0: a 0 would pass every max bound", () => {
    expect(latencyAt(curve, 99)).toBeNaN();
    expect(latencyAt({ ...curve, percentiles: [] }, 99)).toBeNaN();
  });
});
