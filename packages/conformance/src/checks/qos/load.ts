// What the QoS and latency checks share: attaching for the length of a block,
// fio runs wired to the check's progress and cancel signal, prefill, the
// unlimited probe that sizes limits, and arithmetic on per-second series.

import path from "node:path";
import { ConformanceError, isConformanceError } from "../../errors.js";
import { runFio } from "../../fio/runner.js";
import type { FioJobSpec, FioResult } from "../../fio/types.js";
import type { AttachedVolume, AttachRequest, DataPath, ProvisionRequest } from "../../target/target.js";
import type { Check, CheckContext, CheckOutcome } from "../check.js";
import { throwIfCancelled } from "../common/cancel.js";

export const MIB = 1024 * 1024;
export const KIB = 1024;
/** Size of the volumes QoS checks make: small, so prefill stays short; rate tests wrap around it. */
export const QOS_VOLUME_BYTES = 64 * MIB;
/** Fraction of a volume's unlimited rate a limit is set to: demand is then four times the limit. */
export const LIMIT_FRACTION = 0.25;
/** Bounds the neighbours a co-location search provisions per wanted neighbour and node. */
const MAX_PLACEMENT_TRIES_PER_NODE = 3;

/**
 * The outcome with every figure it could not measure (NaN: a percentile fio
 * did not report, a ratio over nothing, a mean of no points) named as a
 * violation, so it fails the check whether the profile bounds it or not.
 * The value stays NaN: the judge leaves it out of the report, where a
 * stand-in number (0) would read as measured, pass `max` bounds and look
 * like an improvement to `compare`.
 */
export function settle(outcome: CheckOutcome): CheckOutcome {
  const broken = outcome.figures.filter((f) => !Number.isFinite(f.value));
  if (broken.length === 0) return outcome;
  return {
    ...outcome,
    violations: [
      ...(outcome.violations ?? []),
      ...broken.map((f) => `${f.name} could not be measured (computed ${f.value}); it is left out of the figures`),
    ],
  };
}

/** `check` with every figure it could not measure named as a violation (see {@link settle}). */
export function settled(check: Check): Check {
  return { ...check, run: async (ctx) => settle(await check.run(ctx)) };
}

/** Distinguishes the work directories of fio runs with the same job name within one process. */
let runCounter = 0;

/**
 * Runs one fio job against `dataPath`; its live samples go to the check's
 * progress. The run's signal cancels it, and so does `stop` (a load that is
 * no longer wanted because the work beside it failed): either way it
 * rejects with CANCELLED once fio has exited.
 */
export function runLoad(ctx: CheckContext, dataPath: DataPath, job: FioJobSpec, stop?: AbortSignal): Promise<FioResult> {
  runCounter++;
  return runFio({
    dataPath,
    job,
    workDir: path.join(ctx.workDir, `fio-${runCounter}-${job.name.replace(/[^A-Za-z0-9.-]/g, "-")}`),
    onSample: (sample) => ctx.progress.sample(sample),
    signal: stop === undefined ? ctx.signal : AbortSignal.any([ctx.signal, stop]),
  });
}

/**
 * Attaches each request in order, runs `body` with the attachments, and
 * detaches them all (newest first) whatever `body` did. A detach failure
 * after a successful body fails the check: a volume left attached is a
 * broken promise of the target, not a detail.
 */
export async function withAttached<T>(
  ctx: CheckContext,
  requests: readonly AttachRequest[],
  body: (attached: AttachedVolume[]) => Promise<T>,
): Promise<T> {
  const attached: AttachedVolume[] = [];
  let result: T;
  try {
    for (const request of requests) {
      throwIfCancelled(ctx.signal);
      attached.push(await ctx.target.attach(request));
    }
    result = await body(attached);
  } catch (error) {
    for (const a of attached.reverse()) await a.detach().catch(() => undefined);
    throw error;
  }
  for (const a of attached.reverse()) await a.detach();
  return result;
}

/** {@link withAttached} for one volume: `body` gets what fio drives. */
export function withAttachedOne<T>(
  ctx: CheckContext,
  request: AttachRequest,
  body: (dataPath: DataPath) => Promise<T>,
): Promise<T> {
  return withAttached(ctx, [request], (attached) => body((attached[0] as AttachedVolume).dataPath));
}

/** Writes the first `sizeBytes` of the volume once, so reads hit data (a thin volume answers unwritten blocks without I/O). */
export async function prefill(ctx: CheckContext, dataPath: DataPath, sizeBytes: number, name = "prefill"): Promise<void> {
  ctx.progress.step(`prefilling ${Math.round(sizeBytes / MIB)} MiB`);
  await runLoad(ctx, dataPath, { name, rw: "write", blockSizeBytes: MIB, iodepth: 8, sizeBytes });
}

/** Seconds of an unlimited probe: half a phase, at least two. */
export function probeSeconds(ctx: CheckContext): number {
  return Math.max(2, Math.round(ctx.timing.phaseS / 2));
}

/** The flood the capacity probes and noisy neighbours run: 4 KiB random, half reads, 32 in flight. */
export function floodJob(name: string, runtimeS: number, extra: Partial<FioJobSpec> = {}): FioJobSpec {
  return { name, rw: "randrw", readPercent: 50, blockSizeBytes: 4 * KIB, iodepth: 32, runtimeS, ...extra };
}

/** IOPS of both directions together. */
export function totalIops(result: FioResult): number {
  return result.read.iops + result.write.iops;
}

/** Completion-latency percentile `p` of one side; NaN (not measured) when fio did not report it. */
export function percentileUs(result: FioResult, p: number, side: "read" | "write" = "read"): number {
  const found = result[side].percentiles.find((x) => Math.abs(x.percentile - p) < 1e-9);
  return found?.latencyUs ?? Number.NaN;
}

/**
 * A limit to configure: `value` rounded down to two significant digits, and
 * at least `floor`, so the report shows limits an operator would type.
 */
export function roundLimit(value: number, floor: number): number {
  if (!(value > floor)) return floor;
  const scale = 10 ** (Math.floor(Math.log10(value)) - 1);
  return Math.max(floor, Math.floor(value / scale) * scale);
}

/** Mean of `points[from..to)`, clamped to the series; NaN when the range is empty. */
export function meanOf(points: readonly number[], from: number, to: number): number {
  const slice = points.slice(Math.max(0, from), Math.min(points.length, to));
  return slice.length === 0 ? Number.NaN : slice.reduce((a, b) => a + b, 0) / slice.length;
}

/** The nodes holding `volume`'s data, as the target reports them (empty when it does not say). */
async function nodesOf(ctx: CheckContext, volume: string): Promise<Set<string>> {
  const health = await ctx.target.health(volume);
  return new Set(health.replicas.map((r) => r.nodeId));
}

/**
 * Provisions `count` volumes that share a node with `anchor`, so their load
 * contends for the anchor's disk: a QoS isolation test between volumes on
 * different disks would measure nothing. Volumes placed elsewhere are
 * deleted and another is tried, up to a bound. A target that does not say
 * where a volume lives gets its first `count` volumes as they come, and a
 * note says so.
 */
export async function provisionColocated(
  ctx: CheckContext,
  anchor: string,
  count: number,
  template: Omit<ProvisionRequest, "name">,
  suffix: string,
  notes: string[],
): Promise<string[]> {
  const anchorNodes = await nodesOf(ctx, anchor);
  const kept: string[] = [];
  const tries = count * Math.max(1, ctx.target.nodeIds().length) * MAX_PLACEMENT_TRIES_PER_NODE;
  let unknown = anchorNodes.size === 0;
  for (let i = 0; kept.length < count && i < tries; i++) {
    throwIfCancelled(ctx.signal);
    const name = ctx.volumeName(`${suffix}${i}`);
    await ctx.target.provision({ ...template, name });
    const nodes = await nodesOf(ctx, name);
    if (unknown || nodes.size === 0 || [...nodes].some((n) => anchorNodes.has(n))) {
      unknown ||= nodes.size === 0;
      kept.push(name);
    } else {
      await ctx.target.deleteVolume(name);
    }
  }
  if (unknown) notes.push(`the target does not report where volumes live; ${anchor} and its neighbours may not share a disk`);
  if (kept.length < count) {
    throw new ConformanceError({
      code: "TARGET_FAILED",
      message: `placed ${kept.length} of ${count} volumes on a node of ${anchor} (${[...anchorNodes].join(", ")}) in ${tries} tries; contention cannot be arranged`,
    });
  }
  return kept;
}

/** True when `error` is the target refusing a reservation that does not fit. */
export function isAdmissionDenied(error: unknown): boolean {
  return isConformanceError(error) && error.code === "ADMISSION_DENIED";
}
