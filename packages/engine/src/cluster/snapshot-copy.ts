import { isKeelsonError, KeelsonError, type Snapshot, type SnapshotChanges } from "@keelson/sdk";
import createDebug from "debug";
import { refs, type SnapshotRecord } from "../metadata/index.js";
import type { ReplicaIo } from "../replication/local-replica.js";
import type { ByteRange, SnapshotChain, SnapshotCopyOutcome } from "../replication/rebuild.js";
import type { RebuildThrottle } from "../replication/rebuild-throttle.js";
import { REBUILD_FLUSH_BYTES, RebuildWriteback } from "../replication/rebuild-writeback.js";
import { ReplicaClient } from "../replication/replica-client.js";
import { listSnapshotRecords } from "./cluster-snapshots.js";
import type { ClusterMembership, ClusterNode } from "./membership.js";

const debug = createDebug("keelson:replication");

/** Largest piece read from a source snapshot and written to the replica at once. */
const COPY_PIECE_BYTES = 1024 * 1024;
/** Pieces of one snapshot copied at once. */
const COPY_PARALLEL = 4;
/** Deadline of each read from a source snapshot's export. */
const SOURCE_READ_TIMEOUT_MS = 10_000;
/** Deadline of the replica-side calls (seal a snapshot, list or diff a pool's layers). */
const PEER_CALL_TIMEOUT_MS = 20_000;
/** Attempts at adding a holder to a snapshot record another writer keeps changing. */
const MAX_HOLDER_ATTEMPTS = 5;

/**
 * The snapshot chain of replicated volume `volume` as its rebuilds copy it
 * (see {@link SnapshotChain}): from a healthy replica's pool to the rebuilt
 * replica's, oldest first, each snapshot as what its layers changed since
 * the one before (on both sides), sealed on the replica under the same name
 * and labels, then recorded with the replica as a holder.
 */
export function snapshotChain(m: ClusterMembership, volume: string): SnapshotChain {
  return {
    copyMissing: (req) => copyMissing(m, volume, req),
    headChanges: async ({ nodeId, source, base }) => {
      const nodes = await m.nodes();
      const [theirs, mine] = await Promise.all(
        [source, nodeId].map((id) => changesOn(m, liveNode(nodes, id), { volume, name: "", baseSnapshot: base })),
      );
      return unionRanges([theirs as SnapshotChanges, mine as SnapshotChanges]);
    },
    missingOn: async (nodeId) =>
      (await listSnapshotRecords(m, volume)).filter((r) => !r.holders.includes(nodeId)).map((r) => r.name),
  };
}

interface CopyRequest {
  nodeId: string;
  client: ReplicaIo;
  sources: readonly string[];
  throttle: RebuildThrottle;
}

async function copyMissing(m: ClusterMembership, volume: string, req: CopyRequest): Promise<SnapshotCopyOutcome> {
  const records = new Map((await listSnapshotRecords(m, volume)).map((r) => [r.name, r]));
  const seen = new Set(records.keys());
  if (records.size === 0) return { base: null, copied: 0, seen };
  const nodes = await m.nodes();
  const source = pickSource(m, nodes, req.sources, [...records.values()]);
  const target = liveNode(nodes, req.nodeId);
  const [chain, theirs] = await Promise.all([
    m.peers.withPeer(source, (c) => c.listSnapshots({ volume }), PEER_CALL_TIMEOUT_MS).then(oldestFirst),
    m.peers.withPeer(target, (c) => c.listSnapshots({ volume }), PEER_CALL_TIMEOUT_MS),
  ]);
  const onTarget = new Set(theirs.map((s) => s.name));
  const held = (name: string) => onTarget.has(name) && (records.get(name)?.holders.includes(req.nodeId) ?? false);
  // Only snapshots the source holds by the record too (its own copy of one it was never recorded for may be partial).
  const usable = chain.filter((s) => records.get(s.name)?.holders.includes(source.nodeId));
  const newestHeld = usable.reduce((last, s, i) => (held(s.name) ? i : last), -1);
  let base: string | null = null;
  let copied = 0;
  for (const [i, snap] of usable.entries()) {
    if (held(snap.name)) {
      base = snap.name;
      continue;
    }
    // A layer cannot go below the replica's newest snapshot: it stays without this one (not a holder).
    if (i < newestHeld) continue;
    const record = records.get(snap.name) as SnapshotRecord;
    await copyOne(m, { volume, record, base, source, target, stale: onTarget.has(snap.name) }, req);
    base = snap.name;
    copied++;
  }
  debug("volume %s: %d snapshot(s) copied to %s from %s (newest shared: %s)", volume, copied, req.nodeId, source.nodeId, base);
  return { base: base === null ? null : { name: base, source: source.nodeId }, copied, seen };
}

interface CopyOne {
  volume: string;
  record: SnapshotRecord;
  /** The newest snapshot both hold below this one; null: none (everything is copied). */
  base: string | null;
  source: ClusterNode;
  target: ClusterNode;
  /** The replica has a snapshot of this name it is not recorded for (a copy cut short): it is dropped first. */
  stale: boolean;
}

/**
 * Makes the replica's head equal to snapshot `record` (writing what it
 * changed since `base` on the source, and what the replica's head changed
 * since `base` on its side), seals it there and records the holder.
 */
async function copyOne(m: ClusterMembership, o: CopyOne, req: CopyRequest): Promise<void> {
  const { volume, record, target } = o;
  const name = record.name;
  if (o.stale) await m.peers.withPeer(target, (c) => c.deleteSnapshot({ volume, name, replicaOnly: true }), PEER_CALL_TIMEOUT_MS);
  const baseSnapshot = o.base ?? "";
  const [theirs, mine] = await Promise.all([
    changesOn(m, o.source, { volume, name, baseSnapshot }),
    changesOn(m, target, { volume, name: "", baseSnapshot }),
  ]);
  const ranges = unionRanges([theirs, mine]).map((r) => ({ ...r, length: Math.min(r.length, theirs.sizeBytes - r.offset) }));
  const reader = await ReplicaClient.connect(
    o.source.replicaAddress ?? "",
    `${volume}@${name}`,
    SOURCE_READ_TIMEOUT_MS,
    m.replicaDial,
  );
  try {
    await copyRanges(
      ranges.filter((r) => r.length > 0),
      reader,
      req,
    );
  } finally {
    reader.close();
  }
  await req.client.flush();
  await m.peers.withPeer(
    target,
    (c) => c.createSnapshot({ volume, name, labels: record.labels, replicaOnly: true }),
    PEER_CALL_TIMEOUT_MS,
  );
  const bytes = ranges.reduce((sum, r) => sum + Math.max(0, r.length), 0);
  debug("volume %s: snapshot %s copied to %s (%d bytes since %s)", volume, name, target.nodeId, bytes, o.base ?? "nothing");
  if (!(await addHolder(m, volume, name, target.nodeId))) {
    // Deleted meanwhile: the copy would be left behind on the replica alone.
    await m.peers
      .withPeer(target, (c) => c.deleteSnapshot({ volume, name, replicaOnly: true }), PEER_CALL_TIMEOUT_MS)
      .catch(() => undefined);
  }
}

/**
 * Reads each range from the source snapshot and writes it to the replica's
 * head (holes as zeroes), paced. As a rebuild's head copy: each worker reads
 * into one buffer it reuses (a fresh 1 MiB per piece cost GC and page faults),
 * and the replica is flushed every `flushBytes` copied, so what it holds dirty
 * stays bounded. Exported for its unit test.
 */
export async function copyRanges(
  ranges: readonly ByteRange[],
  reader: Pick<ReplicaIo, "read">,
  req: Pick<CopyRequest, "client" | "throttle">,
  flushBytes = REBUILD_FLUSH_BYTES,
): Promise<void> {
  const pieces: ByteRange[] = [];
  for (const r of ranges) {
    for (let at = r.offset; at < r.offset + r.length; at += COPY_PIECE_BYTES) {
      pieces.push({ offset: at, length: Math.min(COPY_PIECE_BYTES, r.offset + r.length - at) });
    }
  }
  const writeback = new RebuildWriteback(() => req.client.flush(), flushBytes);
  let next = 0;
  const worker = async (): Promise<void> => {
    // Free again once a piece's write answered; a failed piece ends its worker, so it is not reused then.
    const buffer = Buffer.allocUnsafe(COPY_PIECE_BYTES);
    while (next < pieces.length) {
      const { offset, length } = pieces[next++] as ByteRange;
      await req.throttle.take(length);
      const data = await reader.read(offset, length, buffer.subarray(0, length));
      const hole = isZero(data);
      if (hole) await req.client.zero(offset, length, true, false, false);
      else await req.client.write(offset, data, false);
      await writeback.copied(hole ? 0 : length);
    }
  };
  try {
    await Promise.all(Array.from({ length: COPY_PARALLEL }, worker));
  } finally {
    // Even when a piece failed: no flush of this copy is left running behind it.
    await writeback.settle().catch(() => undefined);
  }
  await writeback.settle();
}

/** Adds `nodeId` to the snapshot's holders; false when the record is gone (the snapshot was deleted). */
async function addHolder(m: ClusterMembership, volume: string, name: string, nodeId: string): Promise<boolean> {
  const ref = refs.snapshot(volume, name);
  for (let attempt = 0; attempt < MAX_HOLDER_ATTEMPTS; attempt++) {
    const current = await m.metadata.get(ref);
    if (current === null) return false;
    if (current.value.holders.includes(nodeId)) return true;
    const value = { ...current.value, holders: [...current.value.holders, nodeId] };
    if (await m.metadata.commit({ if: [{ ref, version: current.version }], put: [{ ref, value }] })) return true;
  }
  throw new KeelsonError({
    code: "UNAVAILABLE",
    message: `snapshot ${volume}@${name}: its record kept changing; ${nodeId} not yet recorded as a holder`,
  });
}

/** The source: a healthy replica's live node holding the most snapshots (this node first on a tie: no network read). */
function pickSource(
  m: ClusterMembership,
  nodes: readonly ClusterNode[],
  sources: readonly string[],
  records: readonly SnapshotRecord[],
): ClusterNode {
  const held = (id: string) => records.filter((r) => r.holders.includes(id)).length;
  const live = sources
    .map((id) => nodes.find((n) => n.nodeId === id && n.alive))
    .filter((n): n is ClusterNode => n !== undefined)
    .sort((a, b) => held(b.nodeId) - held(a.nodeId) || Number(b.nodeId === m.nodeId) - Number(a.nodeId === m.nodeId));
  const pick = live[0];
  if (!pick) {
    throw new KeelsonError({
      code: "UNAVAILABLE",
      message: `no healthy replica's node is up to copy snapshots from (healthy: ${sources.join(", ") || "none"})`,
    });
  }
  return pick;
}

function liveNode(nodes: readonly ClusterNode[], nodeId: string): ClusterNode {
  const node = nodes.find((n) => n.nodeId === nodeId);
  if (!node?.alive) throw new KeelsonError({ code: "UNAVAILABLE", message: `node ${nodeId} is not alive` });
  return node;
}

function changesOn(
  m: ClusterMembership,
  node: ClusterNode,
  req: { volume: string; name: string; baseSnapshot: string },
): Promise<SnapshotChanges> {
  return m.peers
    .withPeer(node, (c) => c.getSnapshotChanges(req), PEER_CALL_TIMEOUT_MS)
    .catch((error: unknown) => {
      // A replica without the volume's head yet (nothing to diff) has nothing above the base.
      if (req.name === "" && isKeelsonError(error, "VOLUME_NOT_FOUND")) return { extentBytes: 1, sizeBytes: 0, extents: [] };
      throw error;
    });
}

/** The byte ranges any of `changes` names, merged where they touch, ascending. */
export function unionRanges(changes: readonly SnapshotChanges[]): ByteRange[] {
  const ranges = changes
    .flatMap((c) => c.extents.map((e) => ({ offset: e * c.extentBytes, length: c.extentBytes })))
    .sort((a, b) => a.offset - b.offset);
  const out: ByteRange[] = [];
  for (const r of ranges) {
    const last = out.at(-1);
    if (last && r.offset <= last.offset + last.length) {
      last.length = Math.max(last.length, r.offset + r.length - last.offset);
    } else out.push({ ...r });
  }
  return out;
}

/** Snapshots of one chain, oldest first (each after its parent snapshot). */
export function oldestFirst(snapshots: readonly Snapshot[]): Snapshot[] {
  const byName = new Map(snapshots.map((s) => [s.name, s]));
  const depth = new Map<string, number>();
  const depthOf = (s: Snapshot): number => {
    const known = depth.get(s.name);
    if (known !== undefined) return known;
    depth.set(s.name, 0); // a cycle (impossible in a pool) ends here instead of recursing forever
    const parent = s.parentSnapshot === "" ? undefined : byName.get(s.parentSnapshot);
    const d = parent ? depthOf(parent) + 1 : 0;
    depth.set(s.name, d);
    return d;
  };
  return [...snapshots].sort((a, b) => depthOf(a) - depthOf(b) || a.createdAt.getTime() - b.createdAt.getTime());
}

const ZERO_PIECE = Buffer.alloc(COPY_PIECE_BYTES);

function isZero(data: Buffer): boolean {
  return data.length <= ZERO_PIECE.length && data.equals(ZERO_PIECE.subarray(0, data.length));
}
