import { describe, expect, it } from "vitest";
import { estimateChange } from "./live-change.js";

describe("estimateChange", () => {
  it("a change that acts at once: the delay is about zero", () => {
    // 1000 IOPS until 4.5 s, then 500: the bucket of the change holds 500 + 250.
    const points = [1100, 1000, 1000, 1000, 750, 500, 500, 500];
    const e = estimateChange(points, 4500, 500);
    expect(e.fell).toBe(true);
    expect(e.beforeIops).toBe(1000);
    expect(e.afterIops).toBe(500);
    expect(e.effectDelayMs).toBeCloseTo(0, 6);
  });

  it("a change that acts 800 ms late: the delay is 800 ms", () => {
    // Old rate until 5.3 s: bucket 5 holds 300 at 1000 and 700 ms at 500.
    const points = [1100, 1000, 1000, 1000, 1000, 650, 500, 500];
    const e = estimateChange(points, 4500, 500);
    expect(e.effectDelayMs).toBeCloseTo(800, 6);
  });

  it("a change never applied: the whole window, and fell is false", () => {
    const points = [1100, 1000, 1000, 1000, 1000, 1000, 1000, 1000];
    const e = estimateChange(points, 4500, 500);
    expect(e.fell).toBe(false);
    expect(e.effectDelayMs).toBe(3500);
  });
});
