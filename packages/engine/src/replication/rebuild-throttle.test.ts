import { describe, expect, it } from "vitest";
import { RebuildThrottle, type ThrottleClock } from "./rebuild-throttle.js";

/** A clock that moves only when slept on: the throttle's pacing is read off it exactly. */
function fakeClock(): ThrottleClock & { slept: number } {
  const c = {
    t: 0,
    slept: 0,
    now: () => c.t,
    sleep: async (ms: number) => {
      c.t += ms;
      c.slept += ms;
    },
  };
  return c;
}

const MIB = 1024 * 1024;

describe("rebuild throttle", () => {
  it("paces copies to the rate on average, a quarter second's burst first", async () => {
    const clock = fakeClock();
    const t = new RebuildThrottle(16 * MIB, clock);
    // 64 copies of 1 MiB from 4 workers at once.
    await Promise.all(
      Array.from({ length: 4 }, async () => {
        for (let i = 0; i < 16; i++) await t.take(MIB);
      }),
    );
    // 64 MiB at 16 MiB/s, less the 4 MiB burst and the debt the last copy leaves unpaid.
    expect(clock.slept).toBeCloseTo(((64 - 4 - 1) / 16) * 1000, 0);
  });

  it("0 means no limit: nothing waits", async () => {
    const clock = fakeClock();
    const t = new RebuildThrottle(0, clock);
    for (let i = 0; i < 100; i++) await t.take(64 * MIB);
    expect(clock.slept).toBe(0);
    expect(t.bytesPerSec).toBe(0);
  });
});
