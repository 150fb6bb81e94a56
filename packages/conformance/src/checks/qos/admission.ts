// qos.admission: reservations are promises, so a target must refuse the ones
// it cannot keep. The check measures what one volume does unlimited (a
// conservative stand-in for one disk's capability, since a single-replica
// volume lives on one disk), asks one volume for far more than a disk could
// do, which must be refused, then provisions single-replica volumes with
// modest reservations until the target refuses. Reservations land where the
// volumes do: what the target admitted is summed per node, and the busiest
// node's sum must not exceed one disk's measured capability (a target that
// puts every volume on one node cannot count the other nodes' disks). A
// target that admits no reservation at all has shown nothing and fails.

import type { Check, CheckContext, CheckOutcome, MeasuredFigure } from "../check.js";
import { throwIfCancelled } from "../common/cancel.js";
import { figure, ratio } from "../common/figures.js";
import {
  floodJob,
  isAdmissionDenied,
  prefill,
  QOS_VOLUME_BYTES,
  roundLimit,
  runLoad,
  totalIops,
  withAttachedOne,
} from "./load.js";

export const ADMISSION_ID = "qos.admission";
/** The probe: four connections of 16 in flight, nearer a disk's capability than one queue. */
const PROBE_JOBS = 4;
const PROBE_IODEPTH = 16;
/** "Beyond capability": this many times what one disk measured, asked of one single-replica volume. */
const BEYOND_FACTOR = 10;
/** Each filling volume reserves this fraction of the measured capability. */
const STEP_FRACTION = 0.25;
/**
 * Filling stops once the busiest node holds this multiple of the measured
 * capability (the check has failed by then), or every node could have:
 * bounds the volumes made whatever the target does.
 */
const MAX_ADMITTED_FACTOR = 2;
/** Reserving volumes are only provisioned, never written: the smallest size. */
const RESERVING_VOLUME_BYTES = 16 * 1024 * 1024;

/** One admitted reservation and the nodes that hold its volume (empty when the target does not say). */
export interface AdmittedVolume {
  reservedIops: number;
  nodes: readonly string[];
}

/** How admitted reservations land on the nodes. */
export interface NodeLoad {
  /** The node holding the most reserved IOPS; "" when no volume was placed. */
  busiestNode: string;
  /** Reserved on it, plus every reservation whose volume the target did not place (it may be there too). */
  busiestNodeIops: number;
  /** Reservations of volumes the target did not say where it put. */
  unplacedIops: number;
}

/**
 * Sums admitted reservations per node holding the volume and picks the
 * busiest. A volume the target does not place is counted on the busiest
 * node: the suite cannot tell it is not there, so it assumes the worst.
 */
export function nodeLoad(admitted: readonly AdmittedVolume[]): NodeLoad {
  const perNode = new Map<string, number>();
  let unplacedIops = 0;
  for (const v of admitted) {
    if (v.nodes.length === 0) unplacedIops += v.reservedIops;
    for (const node of new Set(v.nodes)) perNode.set(node, (perNode.get(node) ?? 0) + v.reservedIops);
  }
  let busiestNode = "";
  let most = 0;
  for (const [node, iops] of [...perNode].sort(([a], [b]) => a.localeCompare(b))) {
    if (iops > most) [busiestNode, most] = [node, iops];
  }
  return { busiestNode, busiestNodeIops: most + unplacedIops, unplacedIops };
}

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

/** The nodes holding `volume`, as the target reports them: its replicas, else the node serving it. */
async function placement(ctx: CheckContext, volume: string): Promise<string[]> {
  const health = await ctx.target.health(volume);
  const nodes = health.replicas.map((r) => r.nodeId).filter((n) => n !== "");
  if (nodes.length > 0) return nodes;
  return health.servingNode === "" ? [] : [health.servingNode];
}

/**
 * Provisions volumes reserving `step` IOPS each until refused, or until the
 * busiest node holds `perNodeCap` or all of them together `totalCap`;
 * resolves with what was admitted and where.
 */
async function fill(
  ctx: CheckContext,
  step: number,
  perNodeCap: number,
  totalCap: number,
): Promise<{ admitted: AdmittedVolume[]; refused: boolean }> {
  const admitted: AdmittedVolume[] = [];
  while (nodeLoad(admitted).busiestNodeIops < perNodeCap && admitted.length * step < totalCap) {
    throwIfCancelled(ctx.signal);
    const name = ctx.volumeName(`r${admitted.length}`);
    if (!(await tryReserve(ctx, name, step))) return { admitted, refused: true };
    admitted.push({ reservedIops: step, nodes: await placement(ctx, name) });
  }
  return { admitted, refused: false };
}

export const admission: Check = {
  id: ADMISSION_ID,
  family: "qos",
  title: "QoS admission control",
  measures: "refusal of a reservation beyond a disk's capability, and the reservations admitted per node against one disk's",
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
    const beyond = roundLimit(capabilityIops * BEYOND_FACTOR, 10);
    ctx.progress.step(`asking for ${beyond} IOPS reserved on one single-replica volume`);
    const beyondName = ctx.volumeName("beyond");
    const beyondAdmitted = await tryReserve(ctx, beyondName, beyond);
    // An admitted giant would make every later refusal meaningless.
    if (beyondAdmitted) await ctx.target.deleteVolume(beyondName);
    const step = roundLimit(capabilityIops * STEP_FRACTION, 10);
    ctx.progress.step(`reserving ${step} IOPS per volume until refused`);
    const perNodeCap = capabilityIops * MAX_ADMITTED_FACTOR;
    const filled = await fill(ctx, step, perNodeCap, perNodeCap * nodes);
    const load = nodeLoad(filled.admitted);
    const admittedIops = filled.admitted.reduce((sum, v) => sum + v.reservedIops, 0);
    const figures: MeasuredFigure[] = [
      figure(
        "measuredCapabilityIops",
        capabilityIops,
        "IOPS",
        "none",
        "4 KiB random 50/50 on one unlimited volume, 4 x 16 in flight: one disk's capability",
      ),
      figure("nodes", nodes, "count", "none", "nodes of the target"),
      figure(
        "beyondCapabilityIops",
        beyond,
        "IOPS",
        "none",
        `the reservation asked of one single-replica volume: ${BEYOND_FACTOR} x one disk's measured capability`,
      ),
      figure("refusedBeyondCapability", beyondAdmitted ? 0 : 1, "count", "higher", "1 when that reservation was refused"),
      figure("stepIops", step, "IOPS", "none", "the reservation of each filling volume"),
      figure("admittedVolumes", filled.admitted.length, "count", "higher", "filling volumes admitted before the first refusal"),
      figure("admittedReservationIops", admittedIops, "IOPS", "none", "their reservations together, on all nodes"),
      figure(
        "busiestNodeReservedIops",
        load.busiestNodeIops,
        "IOPS",
        "none",
        "admitted reservations on the node holding the most (volumes the target did not place counted there too)",
      ),
      figure(
        "admittedRatio",
        ratio(load.busiestNodeIops, capabilityIops),
        "ratio",
        "none",
        "busiest node's admitted reservations / one disk's measured capability: above 1 promises more than was measured",
      ),
    ];
    const notes = [
      `a volume did ${Math.round(capabilityIops)} IOPS unlimited; the target was asked for ${beyond} IOPS on one volume, then ${step} IOPS per volume until refused; ` +
        `${filled.admitted.length} admitted, ${load.busiestNodeIops} IOPS of them on ${load.busiestNode || "an unreported node"}`,
    ];
    if (load.unplacedIops > 0) {
      notes.push(
        `the target did not say where volumes reserving ${load.unplacedIops} IOPS live; they are counted on the busiest node`,
      );
    }
    if (!filled.refused) {
      notes.push(
        `filling stopped unrefused at ${admittedIops} IOPS admitted (${load.busiestNodeIops} on the busiest node), ${MAX_ADMITTED_FACTOR} x what was measured`,
      );
    }
    const violations =
      filled.admitted.length === 0
        ? [
            `the target refused the first reservation of ${step} IOPS (${STEP_FRACTION} of the ${Math.round(capabilityIops)} IOPS a volume did): expected at least 1 admitted, measured 0; a target that admits nothing shows nothing about admission`,
          ]
        : [];
    return { figures, notes, violations };
  },
};
