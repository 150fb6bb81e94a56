// latency.replicas-N: the bench profiles, one after another on one prefilled
// volume of N replicas, each a latency curve and its figures. The family is
// about honest figures: the defaults bound only what no working storage
// exceeds, and `compare` gates regressions against a baseline.

import { BENCH_PROFILES, profileJob } from "../../fio/profiles.js";
import type { LatencyCurve, Threshold } from "../../report/types.js";
import type { Capability } from "../../target/target.js";
import type { Check, CheckContext, CheckOutcome, MeasuredFigure } from "../check.js";
import { throwIfCancelled } from "../common/cancel.js";
import { figure } from "../common/figures.js";
import { MIB, prefill, runLoad, withAttachedOne } from "../qos/load.js";
import { curveOf, latencyAt } from "./curve.js";

/** The volume the profiles run on: large enough that random 4 KiB I/O rarely repeats a block within a phase. */
export const LATENCY_VOLUME_BYTES = 256 * MIB;

/** The figures of one curve, `<profile>.<figure>`. */
export const CURVE_FIGURES = [
  { suffix: "iops", percentile: 0, unit: "IOPS", better: "higher", text: "IOs a second, reads and writes" },
  { suffix: "p50Us", percentile: 50, unit: "us", better: "lower", text: "median completion latency" },
  { suffix: "p99Us", percentile: 99, unit: "us", better: "lower", text: "99th percentile completion latency" },
  { suffix: "p999Us", percentile: 99.9, unit: "us", better: "lower", text: "99.9th percentile completion latency" },
  { suffix: "p9999Us", percentile: 99.99, unit: "us", better: "lower", text: "99.99th percentile completion latency" },
] as const;

function figuresOf(curve: LatencyCurve): MeasuredFigure[] {
  return CURVE_FIGURES.map((f) =>
    figure(
      `${curve.profile}.${f.suffix}`,
      f.percentile === 0 ? curve.iops : latencyAt(curve, f.percentile),
      f.unit,
      f.better,
      `${curve.profile}, ${curve.replicas} replica(s): ${f.text}`,
    ),
  );
}

/** Runs every profile on `replicas` copies; the region is prefilled first so reads hit data. */
async function runProfiles(ctx: CheckContext, replicas: number): Promise<CheckOutcome> {
  const volume = ctx.volumeName(`r${replicas}`);
  await ctx.target.provision({ name: volume, sizeBytes: LATENCY_VOLUME_BYTES, replicas });
  const latency: LatencyCurve[] = [];
  await withAttachedOne(ctx, { volume }, async (dataPath) => {
    await prefill(ctx, dataPath, LATENCY_VOLUME_BYTES);
    for (const profile of BENCH_PROFILES) {
      throwIfCancelled(ctx.signal);
      ctx.progress.step(`${profile.name}, ${replicas} replica(s)`);
      const job = profileJob(profile, { sizeBytes: LATENCY_VOLUME_BYTES, runtimeS: ctx.timing.phaseS, rampS: 1 });
      latency.push(curveOf(profile.name, replicas, await runLoad(ctx, dataPath, job)));
    }
  });
  return {
    figures: latency.flatMap(figuresOf),
    latency,
    notes: [
      `each profile ran ${ctx.timing.phaseS} s after a 1 s ramp on a prefilled ${LATENCY_VOLUME_BYTES / MIB} MiB volume; a mixed profile's percentiles merge reads and writes by count`,
    ],
  };
}

function latencyCheck(replicas: number, needs: readonly Capability[], minNodes: number): Check {
  return {
    id: `latency.replicas-${replicas}`,
    family: "latency",
    title: `Latency and IOPS, ${replicas} replica(s)`,
    measures: `IOPS and p50/p99/p99.9/p99.99 completion latency of the bench profiles on ${replicas} replica(s)`,
    needs,
    minNodes,
    run: (ctx) => runProfiles(ctx, replicas),
  };
}

export const latencyReplicas1 = latencyCheck(1, [], 1);
export const latencyReplicas3 = latencyCheck(3, ["replication"], 3);

/**
 * Sanity bounds only: a profile that completes nothing, or whose p99 exceeds
 * a second, is broken storage whatever the hardware. Everything else is
 * reported unjudged for `compare` to gate against a baseline.
 */
export function sanityThresholds(): Record<string, Threshold> {
  const bounds: Record<string, Threshold> = {};
  for (const profile of BENCH_PROFILES) {
    bounds[`${profile.name}.iops`] = { min: 1 };
    bounds[`${profile.name}.p99Us`] = { max: 1_000_000 };
  }
  return bounds;
}
