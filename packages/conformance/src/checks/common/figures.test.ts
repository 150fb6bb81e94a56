import { describe, expect, it } from "vitest";
import { ascending, percentile, ratio } from "./figures.js";

describe("percentile", () => {
  it("nearest rank on sorted values", () => {
    const values = ascending([5, 1, 4, 2, 3]);
    expect(percentile(values, 50)).toBe(3);
    expect(percentile(values, 99)).toBe(5);
    expect(percentile(values, 100)).toBe(5);
    expect(percentile(values, 0)).toBe(1);
    expect(percentile(ascending(Array.from({ length: 100 }, (_, i) => 100 - i)), 99)).toBe(99);
  });

  it("no values: NaN (not measured), never 0", () => {
    expect(percentile([], 99)).toBeNaN();
  });
});

describe("ratio", () => {
  it("divides measured values", () => {
    expect(ratio(3, 4)).toBe(0.75);
    expect(ratio(0, 4)).toBe(0);
  });

  it("a side not measured, or nothing to divide by: NaN, never a number that could pass a bound", () => {
    expect(ratio(Number.NaN, 4)).toBeNaN();
    expect(ratio(3, Number.NaN)).toBeNaN();
    expect(ratio(3, 0)).toBeNaN();
    expect(ratio(0, 0)).toBeNaN();
    expect(ratio(Number.POSITIVE_INFINITY, 4)).toBeNaN();
  });
});
