// What the HA checks share: a replicated volume attached on the first node,
// waiting for health, and reading replicas on their own to compare them.

import { createHash } from "node:crypto";
import { ConformanceError } from "../../errors.js";
import { nbdReader, openNbd } from "../../nbd/index.js";
import type { AttachedVolume, DataPath, Target, VolumeHealth } from "../../target/target.js";
import type { CheckContext, CheckOutcome, MeasuredFigure } from "../check.js";
import { sleep as pause, throwIfCancelled } from "../common/cancel.js";

export const MIB = 1024 * 1024;
/** Size of the volumes HA checks write: small enough to read back whole after every fault. */
export const HA_VOLUME_BYTES = 64 * MIB;
/** Longest a volume may take to be healthy again (every replica in sync) after a node returns. */
export const HEAL_TIMEOUT_MS = 120_000;
/** Longest a takeover attach is retried while the cluster notices the lost node. */
export const TAKEOVER_TIMEOUT_MS = 60_000;
const READ_CHUNK_BYTES = 4 * MIB;
const NBD_TIMEOUT_MS = 30_000;

export function nbdUriOf(path: DataPath): string {
  if (path.kind !== "nbd")
    throw new ConformanceError({ code: "NOT_SUPPORTED", message: `HA checks drive NBD; got ${path.kind}` });
  return path.uri;
}

/** A fresh volume with `replicas` copies, attached writable on the first node. */
export async function replicatedVolume(
  ctx: CheckContext,
  suffix: string,
  replicas = HA_REPLICAS,
): Promise<{ name: string; attached: AttachedVolume }> {
  const name = ctx.volumeName(suffix);
  await ctx.target.provision({ name, sizeBytes: HA_VOLUME_BYTES, replicas });
  const attached = await ctx.target.attach({ volume: name, nodeId: ctx.target.nodeIds()[0] as string });
  return { name, attached };
}

/** The replicas every HA check asks for. */
export const HA_REPLICAS = 3;

/**
 * How many replicas the target says it keeps of `volume`, as a figure; and,
 * when it keeps fewer than asked, the outcome that ends the check (a
 * volume without its replicas cannot survive what the check does to it).
 */
export async function replicasKept(
  ctx: CheckContext,
  volume: string,
): Promise<{ figure: MeasuredFigure; replicaNodes: string[]; short: CheckOutcome | null }> {
  const health = await ctx.target.health(volume);
  const replicaNodes = health.replicas.map((r) => r.nodeId);
  const figure: MeasuredFigure = {
    name: "replicasKept",
    value: replicaNodes.length,
    unit: "count",
    better: "higher",
    description: `replicas the target reports for a volume provisioned with ${HA_REPLICAS}`,
  };
  if (replicaNodes.length >= HA_REPLICAS) return { figure, replicaNodes, short: null };
  return {
    figure,
    replicaNodes,
    short: {
      figures: [figure],
      violations: [
        `asked for ${HA_REPLICAS} replicas, the target keeps ${replicaNodes.length} (${replicaNodes.join(", ") || "none"}): the faults were not injected`,
      ],
    },
  };
}

/** A volume ready for an HA check, or the outcome that ends the check early. */
export type HaVolume =
  | { short: CheckOutcome }
  | { short: null; name: string; attached: AttachedVolume; kept: Awaited<ReturnType<typeof replicasKept>> };

/**
 * The start of every HA check: a replicated volume attached on the first
 * node, and the replicas the target keeps of it; when it keeps fewer than
 * asked, the volume is detached and the check ends with that finding.
 */
export async function haVolume(ctx: CheckContext): Promise<HaVolume> {
  const { name, attached } = await replicatedVolume(ctx, "vol");
  const kept = await replicasKept(ctx, name);
  if (kept.short) {
    await attached.detach().catch(() => undefined);
    return { short: kept.short };
  }
  return { short: null, name, attached, kept };
}

/** A node the target says holds a replica of the volume, other than the one serving it. */
export function replicaVictim(target: Target, serving: string, replicaNodes: readonly string[]): string {
  return otherNode(target, [serving, ...target.nodeIds().filter((n) => !replicaNodes.includes(n))]);
}

/** Polls until every replica is healthy; rejects with TARGET_FAILED naming the last state seen. */
export async function waitHealthy(
  target: Target,
  volume: string,
  signal: AbortSignal,
  timeoutMs = HEAL_TIMEOUT_MS,
): Promise<VolumeHealth> {
  const deadline = Date.now() + timeoutMs;
  let last: VolumeHealth | null = null;
  let lastError = "";
  while (Date.now() < deadline && !signal.aborted) {
    try {
      last = await target.health(volume);
      if (last.state === "healthy" && last.replicas.length > 0 && last.replicas.every((r) => r.state === "healthy")) return last;
    } catch (error) {
      lastError = (error as Error).message;
    }
    await new Promise((r) => setTimeout(r, 200));
  }
  throw new ConformanceError({
    code: "TARGET_FAILED",
    message: `${volume} not healthy within ${timeoutMs} ms; last seen ${JSON.stringify(last)}${lastError ? `; ${lastError}` : ""}`,
  });
}

/**
 * Attaches `volume` writable on `nodeId`, taking it over from a lost node;
 * retried while the target still refuses (it has not seen the node go yet).
 */
export async function takeOver(ctx: CheckContext, volume: string, nodeId: string): Promise<AttachedVolume> {
  const deadline = Date.now() + TAKEOVER_TIMEOUT_MS;
  for (;;) {
    try {
      return await ctx.target.attach({ volume, nodeId, takeover: true });
    } catch (error) {
      if (Date.now() > deadline || ctx.signal.aborted) throw error;
      await new Promise((r) => setTimeout(r, 100));
    }
  }
}

/** SHA-256 of each 1 MiB of an export, read with big requests. */
async function digests(uri: string, sizeBytes: number): Promise<string[]> {
  await using c = await openNbd(uri, { timeoutMs: NBD_TIMEOUT_MS });
  const read = nbdReader(c, uri);
  const out: string[] = [];
  for (let off = 0; off < sizeBytes; off += READ_CHUNK_BYTES) {
    const buf = await read(off, Math.min(READ_CHUNK_BYTES, sizeBytes - off));
    for (let m = 0; m < buf.length; m += MIB)
      out.push(
        createHash("sha256")
          .update(buf.subarray(m, m + MIB))
          .digest("hex"),
      );
  }
  return out;
}

/**
 * Reads every replica on its own and compares them MiB by MiB against the
 * first; resolves with the count of MiB that differ on any replica, and which.
 * A replica the target names in its health but cannot be read on its own is
 * a mismatch too (a comparison of fewer copies proves less than it says).
 * The volume must be quiet (no writes in flight) while this runs.
 */
export async function compareReplicas(
  target: Target,
  volume: string,
  sizeBytes: number,
): Promise<{ replicas: number; mismatchedMiB: number; detail: string[] }> {
  const expected = (await target.health(volume)).replicas.map((r) => r.nodeId);
  const paths = await target.replicaPaths(volume);
  const detail: string[] = [];
  const missing = expected.filter((n) => !paths.some((p) => p.nodeId === n));
  if (missing.length > 0) detail.push(`replicas on ${missing.join(", ")} could not be read on their own`);
  const images = [];
  for (const p of paths) images.push({ nodeId: p.nodeId, d: await digests(nbdUriOf(p.dataPath), sizeBytes) });
  const [first] = images;
  let mismatchedMiB = missing.length > 0 ? Math.ceil(sizeBytes / MIB) : 0;
  if (!first) return { replicas: 0, mismatchedMiB, detail };
  for (let m = 0; m < first.d.length; m++) {
    const differing = images.filter((i) => i.d[m] !== first.d[m]).map((i) => i.nodeId);
    if (differing.length === 0) continue;
    if (missing.length === 0) mismatchedMiB++;
    if (detail.length < 5) detail.push(`MiB ${m}: ${differing.join(", ")} differ from ${first.nodeId}`);
  }
  return { replicas: images.length, mismatchedMiB, detail };
}

/** A node of the target other than `exclude`, in the target's order. */
export function otherNode(target: Target, exclude: readonly string[]): string {
  const n = target.nodeIds().find((id) => !exclude.includes(id));
  if (!n) throw new ConformanceError({ code: "NOT_SUPPORTED", message: `no node besides ${exclude.join(", ")}` });
  return n;
}

/** Waits `ms`; on an interrupted run rejects with CANCELLED at once, so no further fault is injected. */
export async function sleep(ms: number, signal: AbortSignal): Promise<void> {
  await pause(ms, signal);
  throwIfCancelled(signal);
}
