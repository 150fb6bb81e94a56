// qos.live-change: a read IOPS limit halved while a flood runs. The limit
// must hold before and after, and the new one must take effect promptly:
// the delay is read off the per-second series as the IOs done after the
// call beyond the new rate, divided by the drop in rate.

import type { FioResult } from "../../fio/types.js";
import type { TimeSeries } from "../../report/types.js";
import type { Check, CheckContext, CheckOutcome, MeasuredFigure } from "../check.js";
import { sleep, throwIfCancelled } from "../common/cancel.js";
import { alongside } from "../common/concurrent.js";
import { figure, ratio } from "../common/figures.js";
import {
  KIB,
  LIMIT_FRACTION,
  meanOf,
  prefill,
  probeSeconds,
  QOS_VOLUME_BYTES,
  roundLimit,
  runLoad,
  withAttachedOne,
} from "./load.js";

export const LIVE_CHANGE_ID = "qos.live-change";
/** Where in its second the change lands; mid-second, so the estimate does not hinge on a bucket edge. */
const CHANGE_OFFSET_MS = 500;

/** When the limit changed, in ms from fio's start, and how long the call took. */
interface Change {
  atMs: number;
  callMs: number;
}

/** What the series says about the change. */
export interface ChangeEstimate {
  /** Mean rate over the full seconds before the change (the first second, with its burst, left out). */
  beforeIops: number;
  /** Mean rate over the last two full seconds, at least one full second after the change. */
  afterIops: number;
  /** Ms from the call until the rate followed the new limit; the window left when it never did. */
  effectDelayMs: number;
  /** False when the rate did not fall by a tenth of the limits' difference. */
  fell: boolean;
}

/**
 * Estimates how long after `atMs` the rate dropped from `before` to `after`:
 * the IOs completed after the call beyond what the new rate alone gives,
 * over the rate's drop. The old rate is assumed up to the call (the change
 * cannot act earlier), which keeps the bucket the call lands in from biasing
 * the estimate. Pure, so it is unit-tested.
 */
export function estimateChange(points: readonly number[], atMs: number, limitDrop: number): ChangeEstimate {
  const n = points.length;
  const at = Math.floor(atMs / 1000);
  const beforeIops = meanOf(points, 1, at);
  const afterIops = meanOf(points, Math.max(at + 2, n - 2), n);
  const windowMs = n * 1000 - atMs;
  const drop = beforeIops - afterIops;
  const fell = Number.isFinite(drop) && drop >= 0.1 * limitDrop;
  if (!fell || windowMs <= 0) return { beforeIops, afterIops, effectDelayMs: Math.max(0, windowMs), fell };
  const doneBeforeCall = points.slice(0, at).reduce((a, b) => a + b, 0) + (beforeIops * (atMs - at * 1000)) / 1000;
  const doneAfterCall = points.reduce((a, b) => a + b, 0) - doneBeforeCall;
  const excess = doneAfterCall - (afterIops * windowMs) / 1000;
  const effectDelayMs = Math.min(windowMs, Math.max(0, (excess / drop) * 1000));
  return { beforeIops, afterIops, effectDelayMs, fell };
}

/**
 * Starts the flood, makes the change once a phase has run, and resolves once
 * the flood is done. Exported for its unit test: a flood that fails before
 * the change is this call's error (and the change is not made), a change
 * that fails stops the flood.
 */
export async function floodWithChange(
  ctx: CheckContext,
  flood: (stop: AbortSignal) => Promise<FioResult>,
  change: () => Promise<void>,
): Promise<{ result: FioResult; change: Change }> {
  const { value, loads } = await alongside(
    (stop) => [flood(stop)],
    async (floodFailed) => {
      // A flood that failed ends the pause: there is nothing left to change under.
      await sleep(ctx.timing.phaseS * 1000 + CHANGE_OFFSET_MS, AbortSignal.any([ctx.signal, floodFailed]));
      throwIfCancelled(ctx.signal);
      floodFailed.throwIfAborted();
      const calledAt = Date.now();
      await change();
      return { calledAt, callMs: Date.now() - calledAt };
    },
  );
  const result = loads[0] as FioResult;
  return { result, change: { atMs: value.calledAt - result.startedAtMs, callMs: value.callMs } };
}

export const liveChange: Check = {
  id: LIVE_CHANGE_ID,
  family: "qos",
  title: "QoS limit changed live",
  measures: "a read IOPS limit halved under load: accuracy before and after, and ms until the new limit took effect",
  needs: ["qos-limits"],
  async run(ctx: CheckContext): Promise<CheckOutcome> {
    const volume = ctx.volumeName("vol");
    await ctx.target.provision({ name: volume, sizeBytes: QOS_VOLUME_BYTES, replicas: 1 });
    const job = { rw: "randread", blockSizeBytes: 4 * KIB, iodepth: 32 } as const;
    return withAttachedOne(ctx, { volume }, async (dataPath) => {
      await prefill(ctx, dataPath, QOS_VOLUME_BYTES);
      ctx.progress.step("unlimited probe");
      const unlimited = (await runLoad(ctx, dataPath, { name: "live-unlimited", ...job, runtimeS: probeSeconds(ctx) })).read.iops;
      const before = roundLimit(unlimited * LIMIT_FRACTION, 20);
      const after = roundLimit(before / 2, 10);
      await ctx.target.setQos(volume, { readIops: { rate: before } });
      ctx.progress.step(`flood at ${before} IOPS, then ${after} IOPS`);
      const runtimeS = 2 * ctx.timing.phaseS;
      const { result, change } = await floodWithChange(
        ctx,
        (stop) => runLoad(ctx, dataPath, { name: "live-change", ...job, runtimeS }, stop),
        () => ctx.target.setQos(volume, { readIops: { rate: after } }),
      );
      const points = result.iopsPerSecond.slice(0, runtimeS);
      const estimate = estimateChange(points, change.atMs, before - after);
      const figures: MeasuredFigure[] = [
        figure("limitBeforeIops", before, "IOPS", "none", "the read IOPS limit while the flood started"),
        figure("limitAfterIops", after, "IOPS", "none", "the limit set during the flood"),
        figure("ratioBefore", ratio(estimate.beforeIops, before), "ratio", "none", "measured / configured before the change"),
        figure(
          "ratioAfter",
          ratio(estimate.afterIops, after),
          "ratio",
          "none",
          "measured / configured over the last two seconds",
        ),
        figure("effectDelayMs", estimate.effectDelayMs, "ms", "lower", "from the call until the rate followed the new limit"),
        figure("setQosCallMs", change.callMs, "ms", "lower", "how long the target took to answer the change"),
      ];
      const series: TimeSeries = {
        name: "read IOPS under a live limit change",
        unit: "IOPS",
        intervalMs: 1000,
        points,
        marks: [{ atMs: Math.round(change.atMs), label: `limit ${before} -> ${after} IOPS`, kind: "info" }],
        stalls: [],
      };
      const violations = estimate.fell
        ? []
        : [
            `the rate did not follow the new limit within ${Math.round(estimate.effectDelayMs)} ms after the call (before ${Math.round(estimate.beforeIops)} IOPS, after ${Math.round(estimate.afterIops)} IOPS)`,
          ];
      const notes = [
        "the delay counts from the call; fio reports completions once a second, so a delay well under a second reads as roughly zero",
      ];
      return { figures, series: [series], violations, notes };
    });
  },
};
