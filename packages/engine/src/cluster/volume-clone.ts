import { KeelsonError, type SnapshotRef } from "@keelson/sdk";
import { defaultMinInSync } from "../metadata/index.js";
import type { QosPolicy } from "../qos/policy.js";
import type { ReplicatedVolume } from "../replication/replicated-volume.js";
import { createReplicatedSnapshot, deleteReplicatedSnapshot, findSnapshotRecord } from "./cluster-snapshots.js";
import {
  type ClusterVolumeRecord,
  checkMinInSync,
  createReplicas,
  findClusterVolume,
  getClusterVolume,
  recordNewVolume,
} from "./cluster-volumes.js";
import type { ClusterMembership, ClusterNode } from "./membership.js";

/** Request of {@link cloneReplicatedVolume}. */
export interface CloneReplicatedOptions {
  name: string;
  /** 0: the source's size. */
  sizeBytes: number;
  replicas: number;
  labels: Record<string, string>;
  /** A replicated volume's snapshot, or a replicated volume (cloned at one point in time). */
  source: { snapshot: SnapshotRef } | { volume: string };
  qos?: QosPolicy;
  qosClass?: string;
  /** Write quorum (1..replicas); the default for the replica count when absent. */
  minInSync?: number;
}

/**
 * Clones a replicated snapshot (or a replicated volume, through a snapshot
 * taken for it and deleted again) into a new replicated volume: each replica
 * is an O(1) clone on a node holding the snapshot, so all of them start
 * equal and in sync. Needs `replicas` live holders: INVALID_ARGUMENT when
 * fewer nodes hold the snapshot at all (a replica elsewhere would need a full
 * copy; not done yet), UNAVAILABLE while some are down. Idempotent: a volume
 * of that name with the same replica count (and size, when given) is returned.
 */
export async function cloneReplicatedVolume(
  m: ClusterMembership,
  o: CloneReplicatedOptions,
  sourceFrontend: ReplicatedVolume | undefined,
): Promise<ClusterVolumeRecord> {
  const existing = await findClusterVolume(m, o.name);
  if (existing) {
    if (existing.replicas.length === o.replicas && (o.sizeBytes === 0 || existing.sizeBytes === o.sizeBytes)) return existing;
    throw new KeelsonError({
      code: "ALREADY_EXISTS",
      message: `replicated volume ${o.name} exists with sizeBytes ${existing.sizeBytes} and ${existing.replicas.length} replicas`,
    });
  }
  checkMinInSync(o.name, o.replicas, o.minInSync);
  if ("snapshot" in o.source) return cloneSnapshot(m, o, o.source.snapshot);
  const volume = o.source.volume;
  await getClusterVolume(m, volume);
  // One point in time on every replica: a snapshot of the replicated volume, gone again once cloned
  // (its data stays shared with the clones).
  const snapshot = { volume, name: `keelson-clone-${Date.now().toString(36)}` };
  await createReplicatedSnapshot(m, { ...snapshot, labels: { "keelson.io/clone-for": o.name } }, sourceFrontend);
  try {
    return await cloneSnapshot(m, o, snapshot);
  } finally {
    await deleteReplicatedSnapshot(m, snapshot.volume, snapshot.name).catch(() => undefined);
  }
}

async function cloneSnapshot(m: ClusterMembership, o: CloneReplicatedOptions, ref: SnapshotRef): Promise<ClusterVolumeRecord> {
  const snap = await findSnapshotRecord(m, ref.volume, ref.name);
  if (!snap) {
    throw new KeelsonError({
      code: "SNAPSHOT_NOT_FOUND",
      message: `replicated volume ${ref.volume} has no snapshot ${JSON.stringify(ref.name)}`,
    });
  }
  if (snap.holders.length < o.replicas) {
    throw new KeelsonError({
      code: "INVALID_ARGUMENT",
      message: `snapshot ${ref.volume}@${ref.name} is held on ${snap.holders.length} node(s) (${snap.holders.join(", ")}): a clone can have at most that many replicas, not ${o.replicas}`,
    });
  }
  const nodes = await m.nodes();
  // This node first: the clone is then likely attached where its local replica is.
  const live = snap.holders
    .map((id) => nodes.find((n) => n.nodeId === id && n.alive))
    .filter((n): n is ClusterNode => n !== undefined)
    .sort((a, b) => Number(b.nodeId === m.nodeId) - Number(a.nodeId === m.nodeId));
  if (live.length < o.replicas) {
    throw new KeelsonError({
      code: "UNAVAILABLE",
      message: `snapshot ${ref.volume}@${ref.name} is on ${snap.holders.join(", ")}, of which ${live.length} up: ${o.replicas} needed`,
    });
  }
  const on = live.slice(0, o.replicas);
  const made = await createReplicas(m, { name: o.name, sizeBytes: o.sizeBytes, labels: o.labels, source: { snapshot: ref } }, on);
  const sizeBytes = made[0]?.sizeBytes ?? o.sizeBytes;
  return recordNewVolume(m, {
    name: o.name,
    sizeBytes,
    replicas: on.map((n) => n.nodeId),
    inSync: on.map((n) => n.nodeId),
    ...(o.qos ? { qos: o.qos, qosClass: o.qosClass ?? "" } : {}),
    minInSync: o.minInSync ?? defaultMinInSync(on.length),
    createdAtMs: Date.now(),
  });
}
