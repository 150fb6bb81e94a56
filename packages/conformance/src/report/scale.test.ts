import { describe, expect, it } from "vitest";
import { logDomain, logTicks, niceCeil, niceTicks, nines, percentileOfNines } from "./scale.js";

describe("chart scales", () => {
  it("nines: p90 is one, p99 two, p99.99 four; p100 has none; percentileOfNines inverts it", () => {
    expect(nines(90)).toBeCloseTo(1, 12);
    expect(nines(99)).toBeCloseTo(2, 12);
    expect(nines(99.99)).toBeCloseTo(4, 9);
    expect(nines(100)).toBeUndefined();
    for (const p of [50, 90, 99.9]) expect(percentileOfNines(nines(p)!)).toBeCloseTo(p, 9);
  });

  it("niceTicks: round steps covering the range", () => {
    expect(niceTicks(0, 14_000)).toEqual([0, 2000, 4000, 6000, 8000, 10_000, 12_000, 14_000]);
    expect(niceTicks(0, 1)).toEqual([0, 0.2, 0.4, 0.6, 0.8, 1]);
    expect(niceCeil(12_870)).toBe(14_000);
    expect(niceCeil(0)).toBe(1);
  });

  it("logDomain snaps to 1-2-5 bounds around the data; logTicks stay inside", () => {
    expect(logDomain([57, 3800])).toEqual({ lo: 50, hi: 5000 });
    expect(logDomain([100, 1000])).toEqual({ lo: 100, hi: 1000 });
    expect(logDomain([])).toEqual({ lo: 1, hi: 10 });
    expect(logTicks(50, 5000)).toEqual([50, 100, 200, 500, 1000, 2000, 5000]);
    expect(logTicks(1, 1e6)).toEqual([1, 10, 100, 1000, 10_000, 100_000, 1_000_000]);
  });
});
