import { isKeelsonError, KeelsonError, type Snapshot } from "@keelson/sdk";
import { refs, type SnapshotRecord, type Versioned } from "../metadata/index.js";
import type { ReplicatedVolume } from "../replication/replicated-volume.js";
import { messageOf } from "../util/errors.js";
import { readAttachments } from "./attachments.js";
import { getClusterVolume } from "./cluster-volumes.js";
import type { ClusterMembership, ClusterNode } from "./membership.js";
import { findNode } from "./peers.js";
import { gatherActivityLogs } from "./sync-marks.js";

/** Deadline of one replica's snapshot call (it is O(1) on the replica; writes are held meanwhile). */
const REPLICA_SNAPSHOT_TIMEOUT_MS = 10_000;

export type { SnapshotRecord };

/** The replicated snapshot's record, or null when there is none. */
export async function findSnapshotRecord(m: ClusterMembership, volume: string, name: string): Promise<SnapshotRecord | null> {
  return (await m.metadata.get(refs.snapshot(volume, name)))?.value ?? null;
}

/** Every replicated snapshot record (of one volume when given). */
export async function listSnapshotRecords(m: ClusterMembership, volume?: string): Promise<SnapshotRecord[]> {
  const records = await m.metadata.list("snapshot", volume === undefined ? "" : `${volume}/`);
  return records.map((r) => r.value);
}

/** The snapshot as a live holder serves it (the first that answers). */
export async function snapshotFromHolders(m: ClusterMembership, record: SnapshotRecord): Promise<Snapshot> {
  const nodes = await m.nodes();
  let last: unknown = new KeelsonError({
    code: "UNAVAILABLE",
    message: `no node holding snapshot ${record.volume}@${record.name} is up (${record.holders.join(", ")})`,
  });
  for (const id of record.holders) {
    const node = nodes.find((n) => n.nodeId === id);
    if (!node?.alive) continue;
    try {
      const s = await m.peers.withPeer(node, (c) => c.getSnapshot({ volume: record.volume, name: record.name }));
      return { ...s, holders: record.holders };
    } catch (error) {
      last = error;
    }
  }
  throw last;
}

/**
 * Snapshots a replicated volume at one point on every replica that holds all
 * acknowledged writes. Attached writable elsewhere: the call goes to that
 * node. Attached here: writes are held while each healthy replica takes its
 * snapshot, so all hold the same data. Not attached: the in-sync replicas are
 * idle and equal (a clean detach), and each is snapshotted. The snapshot is
 * recorded in the cluster's metadata with the nodes that hold it. Idempotent by name.
 */
export async function createReplicatedSnapshot(
  m: ClusterMembership,
  req: { volume: string; name: string; labels: Record<string, string> },
  local: ReplicatedVolume | undefined,
): Promise<Snapshot> {
  const existing = await findSnapshotRecord(m, req.volume, req.name);
  if (existing) return snapshotFromHolders(m, existing);
  const writer = (await readAttachments(m, req.volume)).entries.find((e) => !e.readOnly);
  if (writer && writer.nodeId !== m.nodeId) {
    const node = await findNode(m, writer.nodeId);
    if (!node.alive) {
      throw new KeelsonError({
        code: "UNAVAILABLE",
        message: `volume ${req.volume} is attached writable on ${node.nodeId}, which is down: take it over or detach it first`,
      });
    }
    return m.peers.withPeer(node, (c) => c.createSnapshot(req), 60_000);
  }
  const nodes = await m.nodes();
  const onReplicas = (ids: string[]) =>
    Promise.allSettled(
      ids.map((id) =>
        m.peers
          .withPeer(
            nodes.find((n) => n.nodeId === id) as ClusterNode,
            (c) => c.createSnapshot({ ...req, replicaOnly: true }),
            REPLICA_SNAPSHOT_TIMEOUT_MS,
          )
          .then((s) => ({ id, s })),
      ),
    );
  let results: Awaited<ReturnType<typeof onReplicas>>;
  if (writer) {
    if (!local?.serving) {
      throw new KeelsonError({
        code: "UNAVAILABLE",
        message: `volume ${req.volume} is recorded attached on ${m.nodeId} but not served here (the engine restarted?): attach it again`,
      });
    }
    results = await local.quiesce((ids) => onReplicas(ids.filter((id) => nodes.some((n) => n.nodeId === id))));
  } else {
    const record = await getClusterVolume(m, req.volume);
    const { plan, answered } = await gatherActivityLogs(m, record);
    // One replica in sync (a one-replica volume) has no other to differ from: its log names nothing to make equal.
    if (record.inSync.length > 1 && (plan === "all" || plan.length > 0)) {
      throw new KeelsonError({
        code: "UNAVAILABLE",
        message: `volume ${req.volume}: its last writer did not detach cleanly, so its replicas may differ; attach it (that resyncs them) and snapshot again`,
      });
    }
    // Only the replicas whose log was read: one that did not answer may differ where only its log says.
    results = await onReplicas(record.inSync.filter((id) => answered.includes(id)));
  }
  const taken = results.flatMap((r) => (r.status === "fulfilled" ? [r.value] : []));
  const first = taken[0];
  if (!first) {
    const why = results.map((r) => (r.status === "rejected" ? messageOf(r.reason) : "")).filter(Boolean);
    throw new KeelsonError({
      code: "UNAVAILABLE",
      message: `no replica of ${req.volume} took snapshot ${req.name}${why.length ? `: ${why.join("; ")}` : ""}`,
    });
  }
  const record: SnapshotRecord = {
    volume: req.volume,
    name: req.name,
    holders: taken.map((t) => t.id),
    labels: req.labels,
    createdAtMs: Date.now(),
  };
  const ref = refs.snapshot(req.volume, req.name);
  const put = await m.metadata.commit({ if: [{ ref, version: null }], put: [{ ref, value: record }] });
  if (!put) {
    const raced = await findSnapshotRecord(m, req.volume, req.name);
    if (raced) return snapshotFromHolders(m, raced);
  }
  return { ...first.s, holders: record.holders };
}

/**
 * Deletes a replicated snapshot on every holder (a holder's own snapshot
 * already gone counts as deleted); returns the bytes freed, or null when it
 * is no replicated snapshot. Holders that are down keep it: the record keeps
 * them and the call fails with UNAVAILABLE, so a retry finishes the job.
 */
export async function deleteReplicatedSnapshot(m: ClusterMembership, volume: string, name: string): Promise<number | null> {
  const record = await findSnapshotRecord(m, volume, name);
  if (!record) return null;
  const nodes = await m.nodes();
  let freed = 0;
  const left: string[] = [];
  const why: string[] = [];
  for (const id of record.holders) {
    const node = nodes.find((n) => n.nodeId === id);
    if (!node?.alive) {
      left.push(id);
      why.push(`${id}: down`);
      continue;
    }
    try {
      freed += (await m.peers.withPeer(node, (c) => c.deleteSnapshot({ volume, name, replicaOnly: true }), 60_000)).freedBytes;
    } catch (error) {
      if (isKeelsonError(error, "SNAPSHOT_NOT_FOUND")) continue;
      left.push(id);
      why.push(`${id}: ${messageOf(error)}`);
    }
  }
  const ref = refs.snapshot(volume, name);
  if (left.length === 0) {
    await m.metadata.delete(ref);
    return freed;
  }
  await m.metadata.put(ref, { ...record, holders: left });
  throw new KeelsonError({
    code: "UNAVAILABLE",
    message: `snapshot ${volume}@${name} is still on ${why.join("; ")}; delete it again once they are up`,
  });
}

/** Compare-and-swap attempts per snapshot record when a holder is dropped. */
const MAX_DROP_ATTEMPTS = 5;

/**
 * Drops `nodeId` from the holders of every snapshot of `volume`: its replica
 * was replaced, so its copies are no replica's any more (they are deleted
 * with its stale copy once it is back, see {@link deleteUnheldSnapshots}).
 * A record that keeps changing is left for the caller's next pass.
 */
export async function dropHolder(m: ClusterMembership, volume: string, nodeId: string): Promise<void> {
  for (const entry of await m.metadata.list("snapshot", `${volume}/`)) {
    const ref = entry.ref;
    let current: Versioned<"snapshot"> | null = entry;
    for (let attempt = 0; current?.value.holders.includes(nodeId) && attempt < MAX_DROP_ATTEMPTS; attempt++) {
      const updated = { ...current.value, holders: current.value.holders.filter((id) => id !== nodeId) };
      if (await m.metadata.commit({ if: [{ ref, version: current.version }], put: [{ ref, value: updated }] })) break;
      current = await m.metadata.get(ref);
    }
  }
}

/**
 * Deletes the snapshots of `volume` in `node`'s own pool that no record
 * names it a holder of (copies of a replaced replica). Returns how many.
 */
export async function deleteUnheldSnapshots(m: ClusterMembership, volume: string, node: ClusterNode): Promise<number> {
  const records = new Map((await listSnapshotRecords(m, volume)).map((r) => [r.name, r]));
  let deleted = 0;
  await m.peers.withPeer(node, async (c) => {
    for (const s of await c.listSnapshots({ volume })) {
      if (records.get(s.name)?.holders.includes(node.nodeId)) continue;
      try {
        await c.deleteSnapshot({ volume, name: s.name, replicaOnly: true });
        deleted++;
      } catch (error) {
        if (!isKeelsonError(error, "SNAPSHOT_NOT_FOUND")) throw error;
      }
    }
  });
  return deleted;
}
