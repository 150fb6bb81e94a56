// Latency curves from fio results. A mixed profile has reads and writes with
// separate percentiles; its curve merges them, weighted by their counts, so
// a 70/30 mix reads as the distribution its application sees.

import type { FioResult, FioSideResult } from "../../fio/types.js";
import type { LatencyCurve } from "../../report/types.js";

const MIB = 1024 * 1024;
/** Bisection steps when inverting a merged distribution: far below a microsecond on any range fio reports. */
const BISECTION_STEPS = 64;

type Percentiles = LatencyCurve["percentiles"];

/**
 * The fraction of one side's IOs completed within `us`, interpolated
 * linearly between its reported percentiles (from 0 at 0 us, to all at its
 * maximum latency).
 */
function fractionWithin(side: FioSideResult, us: number): number {
  const points: Array<[number, number]> = [
    [0, 0],
    ...side.percentiles.map((p): [number, number] => [p.latencyUs, p.percentile / 100]),
  ];
  points.push([Math.max(side.maxUs, points.at(-1)?.[0] ?? 0), 1]);
  let below: [number, number] = [0, 0];
  for (const point of points) {
    if (point[0] > us) {
      const [x0, f0] = below;
      const [x1, f1] = point;
      return f0 + ((f1 - f0) * (us - x0)) / (x1 - x0);
    }
    // Equal latencies for several percentiles (fio's histogram buckets): the highest fraction holds at that latency.
    below = point;
  }
  return 1;
}

/** Percentiles of reads and writes together, each side weighted by its IOs; sides with no IO are left out. */
export function mergePercentiles(sides: readonly FioSideResult[]): Percentiles {
  const active = sides.filter((s) => s.iops > 0 && s.percentiles.length > 0);
  if (active.length === 0) return [];
  if (active.length === 1) return (active[0] as FioSideResult).percentiles.map((p) => ({ ...p }));
  const total = active.reduce((sum, s) => sum + s.iops, 0);
  const merged = (us: number) => active.reduce((sum, s) => sum + s.iops * fractionWithin(s, us), 0) / total;
  const top = Math.max(...active.map((s) => Math.max(s.maxUs, s.percentiles.at(-1)?.latencyUs ?? 0)));
  return (active[0] as FioSideResult).percentiles.map(({ percentile }) => {
    let lo = 0;
    let hi = top;
    for (let i = 0; i < BISECTION_STEPS; i++) {
      const mid = (lo + hi) / 2;
      if (merged(mid) >= percentile / 100) hi = mid;
      else lo = mid;
    }
    return { percentile, latencyUs: hi };
  });
}

/** The curve of one fio run of a bench profile. */
export function curveOf(profile: string, replicas: number, result: FioResult): LatencyCurve {
  return {
    profile,
    replicas,
    iops: result.read.iops + result.write.iops,
    mibPerSec: (result.read.bytesPerSec + result.write.bytesPerSec) / MIB,
    percentiles: mergePercentiles([result.read, result.write]),
  };
}

/**
 * The latency at `percentile` on `curve`; NaN (not measured) when fio did not
 * report it. Never 0: a 0 would pass every `max` bound and read as an
 * improvement in `compare`.
 */
export function latencyAt(curve: LatencyCurve, percentile: number): number {
  return curve.percentiles.find((p) => Math.abs(p.percentile - percentile) < 1e-9)?.latencyUs ?? Number.NaN;
}
