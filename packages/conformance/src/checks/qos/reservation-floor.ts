// qos.reservation-floor: a victim with a reservation floods beside several
// unlimited neighbours on its disk. Whatever they do, the victim must get its
// reserved IOPS. The reservation is set above the victim's fair share of the
// flood, so the check passes only when the reservation, not an even split,
// carries the victim; a run where it did not land above the even split
// proves nothing about reservations and fails.

import type { AttachedVolume, DataPath } from "../../target/target.js";
import type { Check, CheckContext, CheckOutcome, MeasuredFigure } from "../check.js";
import { sleep, throwIfCancelled } from "../common/cancel.js";
import { alongside } from "../common/concurrent.js";
import { figure, ratio } from "../common/figures.js";
import {
  floodJob,
  isAdmissionDenied,
  prefill,
  provisionColocated,
  QOS_VOLUME_BYTES,
  roundLimit,
  runLoad,
  totalIops,
  withAttached,
} from "./load.js";

export const RESERVATION_FLOOR_ID = "qos.reservation-floor";
const NEIGHBOURS = 3;
/** The reservation, as a fraction of what the victim did alone: above its fair share of 1 / (neighbours + 1). */
const RESERVATION_FRACTION = 0.4;
/** The neighbours flood this long before the victim starts. */
const LEAD_MS = 1000;

/**
 * Floods every neighbour and, after a lead, the victim; resolves with the
 * victim's and the neighbours' IOPS once every flood is done. Exported for
 * its unit test: a flood that fails mid-run is this call's error.
 */
export async function contend(
  ctx: CheckContext,
  victim: DataPath,
  neighbours: DataPath[],
): Promise<{ victimIops: number; neighboursIops: number }> {
  const { value, loads } = await alongside(
    (stop) => neighbours.map((path, i) => runLoad(ctx, path, floodJob(`neighbour-${i}`, ctx.timing.phaseS + 3), stop)),
    async (floodFailed) => {
      await sleep(LEAD_MS, AbortSignal.any([ctx.signal, floodFailed]));
      throwIfCancelled(ctx.signal);
      floodFailed.throwIfAborted();
      return runLoad(ctx, victim, floodJob("victim", ctx.timing.phaseS, { rampS: 1 }), floodFailed);
    },
  );
  return { victimIops: totalIops(value), neighboursIops: loads.reduce((sum, r) => sum + totalIops(r), 0) };
}

/**
 * The violation of a run whose reservation was not above the victim's even
 * share of what all volumes did together (or whose share is unknown): the
 * victim's rate then shows fair sharing, and says nothing about whether the
 * target keeps reservations. Undefined when the reservation was above it.
 */
export function fairShareViolation(reservationIops: number, fairShareIops: number): string | undefined {
  if (reservationIops > fairShareIops) return undefined;
  return `the reservation (${reservationIops} IOPS) was not above an even split of what the ${NEIGHBOURS + 1} volumes did together (${Math.round(fairShareIops)} IOPS): the victim's rate shows fair sharing, not the reservation, so the run proves nothing about reservations`;
}

export const reservationFloor: Check = {
  id: RESERVATION_FLOOR_ID,
  family: "qos",
  title: "QoS reservation floor",
  measures: `a reserved victim's IOPS beside ${NEIGHBOURS} unlimited flooding neighbours, against its reservation`,
  needs: ["qos-reservations"],
  async run(ctx: CheckContext): Promise<CheckOutcome> {
    const notes: string[] = [];
    const victim = ctx.volumeName("victim");
    await ctx.target.provision({ name: victim, sizeBytes: QOS_VOLUME_BYTES, replicas: 1 });
    const neighbours = await provisionColocated(
      ctx,
      victim,
      NEIGHBOURS,
      { sizeBytes: QOS_VOLUME_BYTES, replicas: 1 },
      "neighbour",
      notes,
    );
    const requests = [victim, ...neighbours].map((volume) => ({ volume }));
    return withAttached(ctx, requests, async (attached) => {
      const [victimPath, ...neighbourPaths] = attached.map((a: AttachedVolume) => a.dataPath) as [DataPath, ...DataPath[]];
      for (const [i, path] of [victimPath, ...neighbourPaths].entries()) {
        await prefill(ctx, path, QOS_VOLUME_BYTES, `prefill-${i}`);
      }
      ctx.progress.step("victim alone, unlimited");
      // Measured as long as the contended run: the reservation is a fraction of it, and must not land below a fair share by noise.
      const aloneIops = totalIops(await runLoad(ctx, victimPath, floodJob("victim-alone", ctx.timing.phaseS, { rampS: 1 })));
      const reservationIops = roundLimit(aloneIops * RESERVATION_FRACTION, 10);
      try {
        await ctx.target.setQos(victim, { reservationIops });
      } catch (error) {
        if (!isAdmissionDenied(error)) throw error;
        return {
          figures: [figure("reservationIops", reservationIops, "IOPS", "none", "the reservation asked")],
          violations: [
            `the target refused a ${reservationIops}-IOPS reservation, ${RESERVATION_FRACTION} of the ${Math.round(aloneIops)} IOPS the volume did alone: ${(error as Error).message}`,
          ],
          notes,
        };
      }
      ctx.progress.step(`victim reserving ${reservationIops} IOPS beside ${NEIGHBOURS} floods`);
      const { victimIops, neighboursIops } = await contend(ctx, victimPath, neighbourPaths);
      const fairShare = (victimIops + neighboursIops) / (NEIGHBOURS + 1);
      const figures: MeasuredFigure[] = [
        figure("victimAloneIops", aloneIops, "IOPS", "none", "the victim's flood alone, unlimited"),
        figure("reservationIops", reservationIops, "IOPS", "none", `the victim's reservation (${RESERVATION_FRACTION} of alone)`),
        figure("victimIops", victimIops, "IOPS", "higher", "the victim's IOPS beside the floods"),
        figure("neighboursIops", neighboursIops, "IOPS", "none", `the ${NEIGHBOURS} unlimited neighbours together`),
        figure("fairShareIops", fairShare, "IOPS", "none", `an even split of what all ${NEIGHBOURS + 1} volumes did together`),
        figure("floorRatio", ratio(victimIops, reservationIops), "ratio", "higher", "victim IOPS / reservation"),
      ];
      const violation = fairShareViolation(reservationIops, fairShare);
      notes.push(
        `every volume floods 4 KiB random 50/50 at queue depth 32; an even split would give the victim ${Math.round(100 / (NEIGHBOURS + 1))}% of the disk, the reservation asks ${RESERVATION_FRACTION * 100}% of what it did alone`,
      );
      if (ctx.target.kind === "local") {
        notes.push(
          "on the local target fio and every node share this host's CPUs: a flood that saturates them starves the victim before any disk does",
        );
      }
      return { figures, notes, violations: violation === undefined ? [] : [violation] };
    });
  },
};
