// qos.limit-accuracy: each kind of limit (read, write and total IOPS; read
// and write bandwidth), set on its own at a quarter of what the volume does
// unlimited, then driven at full demand: measured/configured must be close to 1.

import type { FioJobSpec, FioResult } from "../../fio/types.js";
import type { DataPath, QosSpec } from "../../target/target.js";
import type { Check, CheckContext, CheckOutcome, MeasuredFigure } from "../check.js";
import {
  figure,
  KIB,
  LIMIT_FRACTION,
  MIB,
  prefill,
  probeSeconds,
  QOS_VOLUME_BYTES,
  roundLimit,
  runLoad,
  throwIfCancelled,
  totalIops,
  withAttachedOne,
} from "./load.js";

export const LIMIT_ACCURACY_ID = "qos.limit-accuracy";

/** One kind of limit: how to ask for it, how to load it, and what to read off fio. */
interface LimitKind {
  /** Figure prefix, units in the name. */
  name: "readIops" | "writeIops" | "totalIops" | "readMiBPerSec" | "writeMiBPerSec";
  unit: "IOPS" | "MiB/s";
  /** Demand well above any limit: enough in flight that the limit, not latency, caps the rate. */
  job: Omit<FioJobSpec, "name" | "runtimeS" | "rampS">;
  /** The rate fio measured, in the kind's unit. */
  measure(result: FioResult): number;
  /** The QoS that sets only this limit to `value` (in the kind's unit). */
  qos(value: number): QosSpec;
  /** Smallest limit worth setting. */
  floor: number;
}

const IOPS_JOB = { blockSizeBytes: 4 * KIB, iodepth: 32 } as const;
const BANDWIDTH_JOB = { blockSizeBytes: MIB, iodepth: 8 } as const;

const KINDS: readonly LimitKind[] = [
  {
    name: "readIops",
    unit: "IOPS",
    job: { rw: "randread", ...IOPS_JOB },
    measure: (r) => r.read.iops,
    qos: (v) => ({ readIops: { rate: v } }),
    floor: 10,
  },
  {
    name: "writeIops",
    unit: "IOPS",
    job: { rw: "randwrite", ...IOPS_JOB },
    measure: (r) => r.write.iops,
    qos: (v) => ({ writeIops: { rate: v } }),
    floor: 10,
  },
  {
    name: "totalIops",
    unit: "IOPS",
    job: { rw: "randrw", readPercent: 50, ...IOPS_JOB },
    measure: totalIops,
    qos: (v) => ({ totalIops: { rate: v } }),
    floor: 10,
  },
  {
    name: "readMiBPerSec",
    unit: "MiB/s",
    job: { rw: "read", ...BANDWIDTH_JOB },
    measure: (r) => r.read.bytesPerSec / MIB,
    qos: (v) => ({ readBytesPerSec: { rate: v * MIB } }),
    floor: 1,
  },
  {
    name: "writeMiBPerSec",
    unit: "MiB/s",
    job: { rw: "write", ...BANDWIDTH_JOB },
    measure: (r) => r.write.bytesPerSec / MIB,
    qos: (v) => ({ writeBytesPerSec: { rate: v * MIB } }),
    floor: 1,
  },
];

/** Probes one kind unlimited, sets its limit, measures under full demand; returns its figures. */
async function measureKind(ctx: CheckContext, volume: string, dataPath: DataPath, kind: LimitKind): Promise<MeasuredFigure[]> {
  throwIfCancelled(ctx);
  ctx.progress.step(`${kind.name}: unlimited probe`);
  await ctx.target.setQos(volume, {});
  const unlimited = kind.measure(
    await runLoad(ctx, dataPath, { name: `${kind.name}-unlimited`, ...kind.job, runtimeS: probeSeconds(ctx) }),
  );
  const configured = roundLimit(unlimited * LIMIT_FRACTION, kind.floor);
  ctx.progress.step(`${kind.name}: limit ${configured} ${kind.unit}`);
  await ctx.target.setQos(volume, kind.qos(configured));
  // The ramp second keeps the bucket's initial burst out of the figure.
  const limited = await runLoad(ctx, dataPath, {
    name: `${kind.name}-limited`,
    ...kind.job,
    runtimeS: ctx.timing.phaseS,
    rampS: 1,
  });
  const measured = kind.measure(limited);
  return [
    figure(
      `${kind.name}Unlimited`,
      unlimited,
      kind.unit,
      "none",
      `what the volume did without a limit (the limit is ${LIMIT_FRACTION} of it)`,
    ),
    figure(`${kind.name}Configured`, configured, kind.unit, "none", "the limit set"),
    figure(`${kind.name}Measured`, measured, kind.unit, "none", "what fio measured under the limit at full demand"),
    figure(
      `${kind.name}Ratio`,
      measured / configured,
      "ratio",
      "none",
      "measured / configured: 1 is exact, above 1 is not enforced",
    ),
  ];
}

export const limitAccuracy: Check = {
  id: LIMIT_ACCURACY_ID,
  family: "qos",
  title: "QoS limits hold",
  measures: "IOPS (read, write, total) and bandwidth (read, write) limits: measured/configured under 4x demand",
  needs: ["qos-limits"],
  async run(ctx: CheckContext): Promise<CheckOutcome> {
    const volume = ctx.volumeName("vol");
    await ctx.target.provision({ name: volume, sizeBytes: QOS_VOLUME_BYTES, replicas: 1 });
    const figures: MeasuredFigure[] = [];
    await withAttachedOne(ctx, { volume }, async (dataPath) => {
      await prefill(ctx, dataPath, QOS_VOLUME_BYTES);
      for (const kind of KINDS) figures.push(...(await measureKind(ctx, volume, dataPath, kind)));
    });
    return {
      figures,
      notes: [
        `each limit was set alone at ${LIMIT_FRACTION} of the volume's unlimited rate (rounded down to two digits) and driven at queue depth 32 (4 KiB) or 8 (1 MiB); the first second is excluded`,
      ],
    };
  },
};
