// qos.limit-accuracy: each kind of limit (read, write and total IOPS; read
// and write bandwidth), set on its own at a quarter of what the volume does
// unlimited, then driven at full demand: measured/configured must be close to 1.
// Each limit is set with its burst: a target's own default bucket (a second,
// ten seconds) would otherwise decide what the first seconds measure.

import type { FioJobSpec, FioResult } from "../../fio/types.js";
import type { DataPath, QosSpec, RateSpec } from "../../target/target.js";
import type { Check, CheckContext, CheckOutcome, MeasuredFigure } from "../check.js";
import { throwIfCancelled } from "../common/cancel.js";
import { figure, ratio } from "../common/figures.js";
import {
  KIB,
  LIMIT_FRACTION,
  MIB,
  prefill,
  probeSeconds,
  QOS_VOLUME_BYTES,
  roundLimit,
  runLoad,
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
/**
 * The burst every limit is set with: a tenth of a second's worth. With the
 * ramp second left out of the figure, what the bucket saved before the run
 * is spent before measuring starts, whatever the target's default burst.
 */
const BURST_SECONDS = 0.1;

/** A rate and its burst: {@link BURST_SECONDS} of the rate, and at least one IO (`oneIo`, in the rate's unit). */
function withBurst(rate: number, oneIo: number): RateSpec {
  return { rate, burst: Math.max(oneIo, Math.ceil(rate * BURST_SECONDS)) };
}

const KINDS: readonly LimitKind[] = [
  {
    name: "readIops",
    unit: "IOPS",
    job: { rw: "randread", ...IOPS_JOB },
    measure: (r) => r.read.iops,
    qos: (v) => ({ readIops: withBurst(v, 1) }),
    floor: 10,
  },
  {
    name: "writeIops",
    unit: "IOPS",
    job: { rw: "randwrite", ...IOPS_JOB },
    measure: (r) => r.write.iops,
    qos: (v) => ({ writeIops: withBurst(v, 1) }),
    floor: 10,
  },
  {
    name: "totalIops",
    unit: "IOPS",
    job: { rw: "randrw", readPercent: 50, ...IOPS_JOB },
    measure: totalIops,
    qos: (v) => ({ totalIops: withBurst(v, 1) }),
    floor: 10,
  },
  {
    name: "readMiBPerSec",
    unit: "MiB/s",
    job: { rw: "read", ...BANDWIDTH_JOB },
    measure: (r) => r.read.bytesPerSec / MIB,
    qos: (v) => ({ readBytesPerSec: withBurst(v * MIB, BANDWIDTH_JOB.blockSizeBytes) }),
    floor: 1,
  },
  {
    name: "writeMiBPerSec",
    unit: "MiB/s",
    job: { rw: "write", ...BANDWIDTH_JOB },
    measure: (r) => r.write.bytesPerSec / MIB,
    qos: (v) => ({ writeBytesPerSec: withBurst(v * MIB, BANDWIDTH_JOB.blockSizeBytes) }),
    floor: 1,
  },
];

/** Probes one kind unlimited, sets its limit, measures under full demand; returns its figures. */
async function measureKind(ctx: CheckContext, volume: string, dataPath: DataPath, kind: LimitKind): Promise<MeasuredFigure[]> {
  throwIfCancelled(ctx.signal);
  ctx.progress.step(`${kind.name}: unlimited probe`);
  await ctx.target.setQos(volume, {});
  const unlimited = kind.measure(
    await runLoad(ctx, dataPath, { name: `${kind.name}-unlimited`, ...kind.job, runtimeS: probeSeconds(ctx) }),
  );
  const configured = roundLimit(unlimited * LIMIT_FRACTION, kind.floor);
  ctx.progress.step(`${kind.name}: limit ${configured} ${kind.unit}`);
  await ctx.target.setQos(volume, kind.qos(configured));
  // The ramp second keeps the bucket's initial burst (set above) out of the figure.
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
    figure(`${kind.name}Configured`, configured, kind.unit, "none", `the limit set, with a burst of ${BURST_SECONDS} s of it`),
    figure(`${kind.name}Measured`, measured, kind.unit, "none", "what fio measured under the limit at full demand"),
    figure(
      `${kind.name}Ratio`,
      ratio(measured, configured),
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
        `each limit was set alone at ${LIMIT_FRACTION} of the volume's unlimited rate (rounded down to two digits) with a burst of ${BURST_SECONDS} s of it, and driven at queue depth 32 (4 KiB) or 8 (1 MiB); the first second is excluded`,
      ],
    };
  },
};
