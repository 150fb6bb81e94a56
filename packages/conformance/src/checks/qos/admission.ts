// qos.admission: reservations are promises, so a target must refuse the ones
// it cannot keep. The check measures what one volume does unlimited (a
// conservative stand-in for a disk's capability, since single-replica
// volumes live on one disk), asks one volume for far more than every node
// together could do, which must be refused, then provisions volumes with
// modest reservations until the target refuses: what it admitted must not
// exceed what was measured, times the nodes.

import type { Check, CheckContext, CheckOutcome, MeasuredFigure } from "../check.js";
import {
  figure,
  floodJob,
  isAdmissionDenied,
  prefill,
  QOS_VOLUME_BYTES,
  roundLimit,
  runLoad,
  throwIfCancelled,
  totalIops,
  withAttachedOne,
} from "./load.js";

export const ADMISSION_ID = "qos.admission";
/** The probe: four connections of 16 in flight, nearer a disk's capability than one queue. */
const PROBE_JOBS = 4;
const PROBE_IODEPTH = 16;
/** "Beyond capability": this many times what every node together measured. */
const BEYOND_FACTOR = 10;
/** Each filling volume reserves this fraction of the measured capability. */
const STEP_FRACTION = 0.25;
/** Filling stops once admitted reservations reach this multiple of the measured capability: the check has failed by then. */
const MAX_ADMITTED_FACTOR = 2;
/** Reserving volumes are only provisioned, never written: the smallest size. */
const RESERVING_VOLUME_BYTES = 16 * 1024 * 1024;

/** Provisions a volume reserving `iops`; true when admitted, false when refused for its reservation. */
async function tryReserve(ctx: CheckContext, name: string, iops: number): Promise<boolean> {
  try {
    await ctx.target.provision({ name, sizeBytes: RESERVING_VOLUME_BYTES, replicas: 1, qos: { reservationIops: iops } });
    return true;
  } catch (error) {
    if (isAdmissionDenied(error)) return false;
    throw error;
  }
}

/** Provisions volumes reserving `step` IOPS each until refused or `cap` is reached; resolves with what was admitted. */
async function fill(
  ctx: CheckContext,
  step: number,
  cap: number,
): Promise<{ admittedIops: number; volumes: number; refused: boolean }> {
  let admittedIops = 0;
  let volumes = 0;
  while (admittedIops < cap) {
    throwIfCancelled(ctx);
    if (!(await tryReserve(ctx, ctx.volumeName(`r${volumes}`), step))) return { admittedIops, volumes, refused: true };
    admittedIops += step;
    volumes++;
  }
  return { admittedIops, volumes, refused: false };
}

export const admission: Check = {
  id: ADMISSION_ID,
  family: "qos",
  title: "QoS admission control",
  measures: "refusal of reservations beyond capability, and the reservations admitted against measured capability",
  needs: ["qos-reservations"],
  async run(ctx: CheckContext): Promise<CheckOutcome> {
    const nodes = Math.max(1, ctx.target.nodeIds().length);
    const probe = ctx.volumeName("probe");
    await ctx.target.provision({ name: probe, sizeBytes: QOS_VOLUME_BYTES, replicas: 1 });
    const capabilityIops = await withAttachedOne(ctx, { volume: probe }, async (dataPath) => {
      await prefill(ctx, dataPath, QOS_VOLUME_BYTES);
      ctx.progress.step("measuring what a volume does unlimited");
      // A full phase after a ramp: this figure is the denominator of the verdict.
      const job = floodJob("capability", ctx.timing.phaseS, { numjobs: PROBE_JOBS, iodepth: PROBE_IODEPTH, rampS: 1 });
      return totalIops(await runLoad(ctx, dataPath, job));
    });
    await ctx.target.deleteVolume(probe);
    const measuredTotal = capabilityIops * nodes;
    const beyond = roundLimit(measuredTotal * BEYOND_FACTOR, 10);
    ctx.progress.step(`asking for ${beyond} IOPS reserved`);
    const beyondName = ctx.volumeName("beyond");
    const beyondAdmitted = await tryReserve(ctx, beyondName, beyond);
    // An admitted giant would make every later refusal meaningless.
    if (beyondAdmitted) await ctx.target.deleteVolume(beyondName);
    const step = roundLimit(capabilityIops * STEP_FRACTION, 10);
    ctx.progress.step(`reserving ${step} IOPS per volume until refused`);
    const filled = await fill(ctx, step, measuredTotal * MAX_ADMITTED_FACTOR);
    const figures: MeasuredFigure[] = [
      figure(
        "measuredCapabilityIops",
        capabilityIops,
        "IOPS",
        "none",
        "4 KiB random 50/50 on one unlimited volume, 4 x 16 in flight",
      ),
      figure("nodes", nodes, "count", "none", "nodes of the target: the capability is counted once per node"),
      figure(
        "beyondCapabilityIops",
        beyond,
        "IOPS",
        "none",
        `the reservation asked of one volume: ${BEYOND_FACTOR} x measured x nodes`,
      ),
      figure("refusedBeyondCapability", beyondAdmitted ? 0 : 1, "count", "higher", "1 when that reservation was refused"),
      figure("stepIops", step, "IOPS", "none", "the reservation of each filling volume"),
      figure("admittedVolumes", filled.volumes, "count", "none", "filling volumes admitted before the first refusal"),
      figure("admittedReservationIops", filled.admittedIops, "IOPS", "none", "their reservations together"),
      figure(
        "admittedRatio",
        filled.admittedIops / measuredTotal,
        "ratio",
        "none",
        "admitted / (measured x nodes): above 1 promises more than was measured",
      ),
    ];
    const notes = [
      `a volume did ${Math.round(capabilityIops)} IOPS unlimited; with ${nodes} node(s) the target was asked for ${beyond} IOPS on one volume, then ${step} IOPS per volume until refused`,
    ];
    if (!filled.refused)
      notes.push(`filling stopped unrefused at ${filled.admittedIops} IOPS admitted, ${MAX_ADMITTED_FACTOR} x what was measured`);
    return { figures, notes };
  },
};
