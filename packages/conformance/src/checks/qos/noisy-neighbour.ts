// qos.noisy-neighbour: a victim running a modest, steady workload, alone and
// then beside a neighbour on the same disk that floods against its limit.
//
// What is judged is the neighbour *with* a limit. Without a limit or a
// reservation no storage system promises isolation: a flood on a shared
// disk must take capacity, and judging that would judge the disk, not QoS.
// The promise a limit makes an operator is that a capped tenant cannot
// hurt the others, so that is what the figures bound. The guarantee against
// an unlimited flood is a reservation's, and qos.reservation-floor judges
// it. The unlimited neighbour is still measured and reported (unjudged), to
// show what the limit buys.

import type { FioResult } from "../../fio/types.js";
import type { DataPath } from "../../target/target.js";
import type { Check, CheckContext, CheckOutcome, MeasuredFigure } from "../check.js";
import { sleep, throwIfCancelled } from "../common/cancel.js";
import { alongside } from "../common/concurrent.js";
import { figure, ratio } from "../common/figures.js";
import {
  floodJob,
  KIB,
  percentileUs,
  prefill,
  provisionColocated,
  QOS_VOLUME_BYTES,
  roundLimit,
  runLoad,
  totalIops,
  withAttached,
} from "./load.js";

export const NOISY_NEIGHBOUR_ID = "qos.noisy-neighbour";
/** The victim asks for a tenth of what the disk did for the flood: modest, well inside capacity. */
const VICTIM_FRACTION = 0.1;
/**
 * The neighbour's limit: a quarter of the flood's unlimited rate. Queueing
 * alone costs latency as a shared server fills: at 50% busy a single queue's
 * response time doubles however fair the scheduler (M/M/1: 1 / (1 - load)),
 * so a neighbour held to half the disk would fail the p99 bound on perfect
 * QoS. At a quarter (35% busy with the victim) a perfect scheduler stays
 * near 1.4x, and the 2x bound is about QoS, not queueing theory.
 */
const NEIGHBOUR_LIMIT_FRACTION = 0.25;
/** The victim keeps a few IOs in flight, so a slower disk shows as latency before it costs rate. */
const VICTIM_IODEPTH = 4;
/** The neighbour floods this long before the victim starts, so the victim sees it at full force. */
const LEAD_MS = 1000;

interface VictimRun {
  iops: number;
  p99Us: number;
}

function victimOf(result: FioResult): VictimRun {
  return { iops: result.read.iops, p99Us: percentileUs(result, 99, "read") };
}

/**
 * Runs the victim's workload, with the neighbour flooding through it when
 * `neighbour` is given. Exported for its unit test: a flood that fails
 * mid-run is this call's error, and a victim that fails stops the flood.
 */
export async function victimRun(
  ctx: CheckContext,
  victim: DataPath,
  rateIops: number,
  name: string,
  neighbour?: DataPath,
): Promise<{ victim: VictimRun; neighbourIops: number }> {
  const victimJob = {
    name: `victim-${name}`,
    rw: "randread",
    blockSizeBytes: 4 * KIB,
    iodepth: VICTIM_IODEPTH,
    rateIops,
    runtimeS: ctx.timing.phaseS,
    rampS: 1,
  } as const;
  if (!neighbour) return { victim: victimOf(await runLoad(ctx, victim, victimJob)), neighbourIops: 0 };
  // The flood outlasts the victim: its lead, the victim's ramp and run, and a second of slack.
  const { value, loads } = await alongside(
    (stop) => [runLoad(ctx, neighbour, floodJob(`neighbour-${name}`, ctx.timing.phaseS + 3), stop)],
    async (floodFailed) => {
      await sleep(LEAD_MS, AbortSignal.any([ctx.signal, floodFailed]));
      throwIfCancelled(ctx.signal);
      floodFailed.throwIfAborted();
      return victimOf(await runLoad(ctx, victim, victimJob, floodFailed));
    },
  );
  return { victim: value, neighbourIops: totalIops(loads[0] as FioResult) };
}

export const noisyNeighbour: Check = {
  id: NOISY_NEIGHBOUR_ID,
  family: "qos",
  title: "Noisy neighbour isolation",
  measures: "a steady victim's IOPS and p99 beside a flooding neighbour held to its limit, against the victim alone",
  needs: ["qos-limits"],
  async run(ctx: CheckContext): Promise<CheckOutcome> {
    const notes: string[] = [];
    const victim = ctx.volumeName("victim");
    await ctx.target.provision({ name: victim, sizeBytes: QOS_VOLUME_BYTES, replicas: 1 });
    const [neighbour] = await provisionColocated(
      ctx,
      victim,
      1,
      { sizeBytes: QOS_VOLUME_BYTES, replicas: 1 },
      "neighbour",
      notes,
    );
    return withAttached(ctx, [{ volume: victim }, { volume: neighbour as string }], async ([v, n]) => {
      const victimPath = (v as { dataPath: DataPath }).dataPath;
      const neighbourPath = (n as { dataPath: DataPath }).dataPath;
      await prefill(ctx, victimPath, QOS_VOLUME_BYTES, "prefill-victim");
      await prefill(ctx, neighbourPath, QOS_VOLUME_BYTES, "prefill-neighbour");
      ctx.progress.step("neighbour flood alone, unlimited");
      const floodIops = totalIops(await runLoad(ctx, neighbourPath, floodJob("neighbour-alone", ctx.timing.phaseS)));
      const rateIops = roundLimit(floodIops * VICTIM_FRACTION, 10);
      const limitIops = roundLimit(floodIops * NEIGHBOUR_LIMIT_FRACTION, 10);
      ctx.progress.step(`victim alone at ${rateIops} IOPS`);
      const solo = (await victimRun(ctx, victimPath, rateIops, "alone")).victim;
      ctx.progress.step(`victim beside a neighbour limited to ${limitIops} IOPS`);
      await ctx.target.setQos(neighbour as string, { totalIops: { rate: limitIops } });
      const limited = await victimRun(ctx, victimPath, rateIops, "limited", neighbourPath);
      ctx.progress.step("victim beside an unlimited neighbour");
      await ctx.target.setQos(neighbour as string, {});
      const unlimited = await victimRun(ctx, victimPath, rateIops, "unlimited", neighbourPath);
      const figures: MeasuredFigure[] = [
        figure("floodAloneIops", floodIops, "IOPS", "none", "the neighbour's flood alone, unlimited: what the disk does"),
        figure("victimTargetIops", rateIops, "IOPS", "none", `the victim's paced demand (${VICTIM_FRACTION} of the flood alone)`),
        figure("victimSoloIops", solo.iops, "IOPS", "higher", "the victim alone"),
        figure("victimSoloP99Us", solo.p99Us, "us", "lower", "the victim's read p99 alone"),
        figure("neighbourLimitIops", limitIops, "IOPS", "none", "the neighbour's total IOPS limit"),
        figure("neighbourIops", limited.neighbourIops, "IOPS", "none", "what the limited neighbour got"),
        figure(
          "victimIopsRatio",
          ratio(limited.victim.iops, solo.iops),
          "ratio",
          "higher",
          "victim IOPS beside the limited neighbour / alone",
        ),
        figure(
          "victimP99Ratio",
          ratio(limited.victim.p99Us, solo.p99Us),
          "ratio",
          "lower",
          "victim p99 beside the limited neighbour / alone",
        ),
        figure(
          "unlimitedNeighbour.victimIopsRatio",
          ratio(unlimited.victim.iops, solo.iops),
          "ratio",
          "higher",
          "victim IOPS beside an unlimited flood / alone (not judged: no isolation is promised)",
        ),
        figure(
          "unlimitedNeighbour.victimP99Ratio",
          ratio(unlimited.victim.p99Us, solo.p99Us),
          "ratio",
          "lower",
          "victim p99 beside an unlimited flood / alone (not judged)",
        ),
        figure("unlimitedNeighbour.neighbourIops", unlimited.neighbourIops, "IOPS", "none", "what the unlimited neighbour got"),
      ];
      notes.push(
        `victim: 4 KiB random reads at queue depth ${VICTIM_IODEPTH} paced to ${rateIops} IOPS; neighbour: 4 KiB random 50/50 at queue depth 32, limited to ${limitIops} IOPS (${NEIGHBOUR_LIMIT_FRACTION} of its unlimited ${Math.round(floodIops)}), then unlimited`,
      );
      return { figures, notes };
    });
  },
};
