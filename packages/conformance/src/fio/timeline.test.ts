import { describe, expect, it } from "vitest";
import { IoTimeline, type StatusPoint } from "./timeline.js";

// Statuses recorded from fio 3.33 (timestamp_ms, max(read, write).runtime, (io_bytes) / 4096, clat N),
// each with a mean latency of 20 us so the sums are easy to check.
type Recorded = [emittedAtMs: number, runtimeMs: number, completedIos: number, clatCount: number];
const point = ([emittedAtMs, runtimeMs, completedIos, clatCount]: Recorded): StatusPoint => ({
  emittedAtMs,
  runtimeMs,
  completedIos,
  clatCount,
  clatSumNs: clatCount * 20_000,
});

/** 4k randwrite qd4 over nbdkit; nbdkit SIGSTOPped at 333425 and SIGCONTed at 335435; fio spawned at 331422. */
const STALL: Recorded[] = [
  [332614, 897, 47782, 47783],
  [335433, 1896, 86197, 86235], // snapshot at 333613 (inside the stall), printed when the I/O came back
  [335684, 3967, 95819, 95839],
  [336683, 4967, 140194, 140195],
  [337683, 5967, 178189, 178190],
  [337740, 6001, 179467, 179467], // the final report
];

/** 4k randrw qd1 on a file, ramp_time=1: the counters restart after the first status. */
const RAMP: Recorded[] = [
  [254469, 890, 25420, 0], // ramp: completions, no latency samples
  [255579, 999, 23547, 23547], // the clock restarted at 254580
  [256579, 1999, 46472, 46472],
  [257579, 2999, 70529, 70529],
  [257626, 3001, 70531, 70531],
];

/** 4k randread qd1 on a 1 GiB file fio lays out first: three statuses before any I/O. */
const LAYOUT: Recorded[] = [
  [284356, 0, 0, 0],
  [285356, 0, 0, 0],
  [286357, 0, 0, 0],
  [287357, 429, 10244, 10243],
  [288357, 1429, 36796, 36795],
  [289356, 2429, 58042, 58041],
  [289977, 3000, 69592, 69592],
];

function replay(startedAtMs: number, recorded: Recorded[]) {
  const timeline = new IoTimeline(startedAtMs);
  const figures = recorded.map((r) => timeline.add(point(r)));
  return { timeline, figures, series: timeline.perSecond() };
}

describe("IoTimeline", () => {
  it("stall: the seconds nbdkit was stopped hold no completions, though fio printed nothing during them", () => {
    const { series } = replay(331422, STALL);
    // Seconds [331422 + 1000 i, +1000): the stop began 3 ms into second 2 and ended 13 ms into second 4.
    expect(series).toHaveLength(6);
    expect(series[2]).toBeLessThan(series[1]! * 0.01);
    expect(series[3]).toBe(0);
    expect(series[0]).toBeGreaterThan(0);
    expect(series[1]).toBeGreaterThan(40_000);
    expect(series[4]).toBeGreaterThan(40_000);
    // Every completion lands in some second, except those of the last, partial one.
    const sum = series.reduce((a, b) => a + b, 0);
    expect(sum).toBeLessThanOrEqual(179467);
    expect(sum).toBeGreaterThan(179467 - 60_000);
  });

  it("stall: the live figure of the late status is the mean over the wall time it covers", () => {
    const { figures } = replay(331422, STALL);
    expect(figures[0]!.iops).toBeCloseTo((47782 * 1000) / 897, 6);
    expect(figures[1]!.iops).toBeCloseTo(((86197 - 47782) * 1000) / (335433 - 332614), 6);
    expect(figures[1]!.latencyUs).toBeCloseTo(20, 9);
  });

  it("ramp: the restart of fio's counters neither drops nor doubles the second it falls in", () => {
    const { series, timeline } = replay(253279, RAMP);
    expect(timeline.ioStartedAtMs()).toBe(254469 - 890);
    expect(series).toHaveLength(4);
    // Steady ~23.5k IOs a second throughout; second 0 starts 300 ms before the first I/O.
    for (const n of series.slice(1)) expect(Math.abs(n - 23_500) / 23_500).toBeLessThan(0.15);
    expect(series[0]).toBeGreaterThan(15_000);
  });

  it("ramp: the first status on the restarted clock reports its own rate, not a difference across the restart", () => {
    const { figures } = replay(253279, RAMP);
    expect(figures[0]!.latencyUs).toBe(0);
    expect(figures[1]!.iops).toBeCloseTo((23547 * 1000) / 999, 6);
    expect(figures[1]!.latencyUs).toBeCloseTo(20, 9);
    expect(figures[2]!.iops).toBeCloseTo(((46472 - 23547) * 1000) / 1000, 6);
  });

  it("layout: seconds before the first I/O are zeros, and I/O starts where the runtime says", () => {
    const startedAtMs = 283300;
    const { series, figures, timeline } = replay(startedAtMs, LAYOUT);
    expect(figures.slice(0, 3).every((f) => f.iops === 0)).toBe(true);
    // The earliest of print time - runtime over the statuses: 289356 - 2429.
    expect(timeline.ioStartedAtMs()).toBe(286927);
    expect(series).toHaveLength(6);
    expect(series.slice(0, 3)).toEqual([0, 0, 0]);
    // I/O started at 286927, 373 ms before second 4 began.
    expect(series[3]).toBeGreaterThan(5_000);
    expect(series[3]).toBeLessThan(15_000);
    expect(series[4]).toBeGreaterThan(20_000);
  });

  it("no statuses: an empty series", () => {
    expect(new IoTimeline(0).perSecond()).toEqual([]);
  });
});
