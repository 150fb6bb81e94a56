import { describe, expect, it } from "vitest";
import type { PoolSpace } from "./pool-space.js";
import { SpaceAlarm, type SpaceCrossing } from "./space-alarm.js";

const TOTAL = 1000;
const used = (allocatedBytes: number): PoolSpace => ({ totalBytes: TOTAL, allocatedBytes, freeBytes: TOTAL - allocatedBytes });
const brief = (cs: SpaceCrossing[]) => cs.map((c) => `${c.state} ${c.thresholdPercent}`);

describe("SpaceAlarm", () => {
  it("raises each threshold once per crossing however often usage is checked, and re-arms only below it by the margin", () => {
    const alarm = new SpaceAlarm([80, 90, 100], 5);
    expect(brief(alarm.check(used(500)))).toEqual([]);
    expect(brief(alarm.check(used(800)))).toEqual(["raised 80"]);
    // Writes hovering at the threshold: nothing more.
    for (const u of [799, 801, 760, 790, 800, 850]) expect(brief(alarm.check(used(u)))).toEqual([]);
    expect(brief(alarm.check(used(749)))).toEqual(["cleared 80"]);
    expect(brief(alarm.check(used(780)))).toEqual([]);
    expect(brief(alarm.check(used(800)))).toEqual(["raised 80"]);
    expect(alarm.raises(80)).toBe(2);
    expect(alarm.isRaised(80)).toBe(true);
  });

  it("full is no free extent at all; a jump raises every threshold passed, lowest first, and a drop clears them highest first", () => {
    const alarm = new SpaceAlarm();
    expect(brief(alarm.check(used(999)))).toEqual(["raised 80", "raised 90"]);
    expect(brief(alarm.check(used(1000)))).toEqual(["raised 100"]);
    expect(alarm.check(used(1000))[0]).toBeUndefined();
    expect(brief(alarm.check(used(990)))).toEqual([]);
    expect(brief(alarm.check(used(100)))).toEqual(["cleared 100", "cleared 90", "cleared 80"]);
    const c = new SpaceAlarm().check(used(1000))[2] as SpaceCrossing;
    expect(c).toEqual({ thresholdPercent: 100, state: "raised", usedBytes: 1000, totalBytes: TOTAL });
  });
});
