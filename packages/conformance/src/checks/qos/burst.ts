// qos.burst: a read IOPS limit with a burst allowance of two seconds' worth.
// After the volume sat idle long enough to save the whole allowance, a flood
// should get the burst at once and the limit after; the IOs completed beyond
// the steady rate (read off the later seconds) are the burst delivered.

import type { TimeSeries } from "../../report/types.js";
import type { Check, CheckContext, CheckOutcome, MeasuredFigure } from "../check.js";
import { sleep, throwIfCancelled } from "../common/cancel.js";
import { figure, ratio } from "../common/figures.js";
import { KIB, meanOf, prefill, probeSeconds, QOS_VOLUME_BYTES, roundLimit, runLoad, withAttachedOne } from "./load.js";

export const BURST_ID = "qos.burst";
/**
 * The limit is a tenth of what the volume does unlimited, so the flood
 * drains a two-second allowance in about a fifth of a second: the burst
 * lands in the first per-second point instead of smearing over several.
 */
const BURST_LIMIT_FRACTION = 0.1;
/** Seconds of the limit the burst allowance holds. */
const BURST_SECONDS = 2;

export const burst: Check = {
  id: BURST_ID,
  family: "qos",
  title: "QoS burst allowance",
  measures: "IOs delivered beyond the limit right after idle, against the configured burst",
  needs: ["qos-limits"],
  async run(ctx: CheckContext): Promise<CheckOutcome> {
    const volume = ctx.volumeName("vol");
    await ctx.target.provision({ name: volume, sizeBytes: QOS_VOLUME_BYTES, replicas: 1 });
    const job = { rw: "randread", blockSizeBytes: 4 * KIB, iodepth: 32 } as const;
    return withAttachedOne(ctx, { volume }, async (dataPath) => {
      await prefill(ctx, dataPath, QOS_VOLUME_BYTES);
      ctx.progress.step("unlimited probe");
      const unlimited = (await runLoad(ctx, dataPath, { name: "burst-unlimited", ...job, runtimeS: probeSeconds(ctx) })).read
        .iops;
      const limitIops = roundLimit(unlimited * BURST_LIMIT_FRACTION, 10);
      const burstIos = limitIops * BURST_SECONDS;
      await ctx.target.setQos(volume, { readIops: { rate: limitIops, burst: burstIos } });
      // Idle long enough to save the whole allowance from empty, whatever the target did before.
      ctx.progress.step(`idle ${BURST_SECONDS + 1} s to save a ${burstIos}-IO burst`);
      await sleep((BURST_SECONDS + 1) * 1000, ctx.signal);
      throwIfCancelled(ctx.signal);
      ctx.progress.step(`flood against ${limitIops} IOPS with a ${burstIos}-IO burst`);
      const runtimeS = ctx.timing.phaseS + 1;
      const result = await runLoad(ctx, dataPath, { name: "burst-flood", ...job, runtimeS });
      const points = result.iopsPerSecond.slice(0, runtimeS);
      const steady = meanOf(points, BURST_SECONDS, runtimeS);
      // fio's own I/O time (its IOs over its IOPS) leaves out its start-up, which the wall-clock series counts:
      // whatever it completed beyond that time at the steady rate is the burst.
      const ios = result.read.ioBytes / job.blockSizeBytes;
      // No rate, no I/O time: the burst is then not measured (NaN), never "all of it".
      const ioSeconds = ratio(ios, result.read.iops);
      const delivered = ios - steady * ioSeconds;
      const figures: MeasuredFigure[] = [
        figure("limitIops", limitIops, "IOPS", "none", "the read IOPS limit set"),
        figure("burstConfiguredIos", burstIos, "count", "none", "the burst allowance set"),
        figure("firstSecondIos", points[0] ?? Number.NaN, "count", "none", "reads completed in the first second after idle"),
        figure("steadyIops", steady, "IOPS", "none", "rate from the third second on"),
        figure("burstDeliveredIos", delivered, "count", "none", "reads completed beyond the steady rate over fio's I/O time"),
        figure("burstRatio", ratio(delivered, burstIos), "ratio", "none", "burst delivered / configured"),
        figure("steadyRatio", ratio(steady, limitIops), "ratio", "none", "steady rate / limit"),
      ];
      const series: TimeSeries = {
        name: "burst read IOPS",
        unit: "IOPS",
        intervalMs: 1000,
        points,
        marks: [{ atMs: 0, label: `flood after ${BURST_SECONDS + 1} s idle`, kind: "info" }],
        stalls: [],
      };
      const notes = [
        `unlimited the volume did ${Math.round(unlimited)} read IOPS; limit ${limitIops} IOPS with a ${burstIos}-IO burst, flooded at queue depth 32 after ${BURST_SECONDS + 1} s idle`,
      ];
      const violations =
        points.length < BURST_SECONDS + 1
          ? [`fio reported ${points.length} per-second points of a ${runtimeS} s run; too few to tell burst from steady`]
          : [];
      return { figures, series: [series], notes, violations };
    });
  },
};
