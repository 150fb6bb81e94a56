import { KeelsonError, type Volume, type VolumeSource } from "@keelson/sdk";
import { type ClusterVolumeRecord, defaultMinInSync, refs } from "../metadata/index.js";
import type { QosPolicy } from "../qos/policy.js";
import { REPLICA_OF_LABEL } from "../store/volume.js";
import { messageOf } from "../util/errors.js";
import type { ClusterMembership, ClusterNode } from "./membership.js";
import type { PeerDialer } from "./peer-dialer.js";
import { type PlacementCandidate, placeReplicas } from "./placement.js";
import { deleteCopy } from "./stale-copies.js";

export type { ClusterVolumeRecord };

/** Request of {@link createReplicatedVolume}. */
export interface CreateReplicatedOptions {
  name: string;
  sizeBytes: number;
  replicas: number;
  labels: Record<string, string>;
  /** QoS limits of the volume (limits only: see requireLimitsOnly); none when absent. */
  qos?: QosPolicy;
  /** The named class `qos` came from; "" when given as limits. */
  qosClass?: string;
  /** Write quorum (1..replicas); the default for the replica count when absent. */
  minInSync?: number;
}

/** Pauses between attempts to learn a peer's pool space (a busy or just-started peer gets about 2 s). */
const FREE_SPACE_RETRY_DELAYS_MS = [200, 600, 1200];

/** What placement learns of a live peer's pool: free bytes and its promises against its over-commit limit. */
export type PeerPoolSpace = Pick<PlacementCandidate, "freeBytes" | "provisioning" | "problem">;

/** A live peer's pool space, or why it could not be learned after a few attempts. */
export async function peerPoolSpace(peers: PeerDialer, node: ClusterNode): Promise<PeerPoolSpace> {
  let last: unknown;
  for (let attempt = 0; attempt <= FREE_SPACE_RETRY_DELAYS_MS.length; attempt++) {
    if (attempt > 0) await new Promise((r) => setTimeout(r, FREE_SPACE_RETRY_DELAYS_MS[attempt - 1]));
    try {
      const pool = await peers.withPeer(node, async (c) => (await c.getNode()).pool);
      // An engine from before over-commit limits reports 0%: no limit known here (its create still decides).
      if (pool.overcommitPercent === 0) return { freeBytes: pool.freeBytes };
      const { provisionedBytes, provisionLimitBytes: limitBytes, overcommitPercent } = pool;
      return { freeBytes: pool.freeBytes, provisioning: { provisionedBytes, limitBytes, overcommitPercent } };
    } catch (error) {
      last = error;
    }
  }
  return { freeBytes: 0, problem: `GetNode at ${node.controlAddress} failed: ${messageOf(last)}` };
}

/** Longest a placement waits for nodes the leader still counts up to take their lease again. */
const LEASE_FLAP_WAIT_MS = 5_000;

/**
 * The cluster's nodes for placing `replicas` replicas. A node whose lease
 * lapsed a moment ago (a busy machine, a slow etcd) but which the leader has
 * not marked down usually takes a new lease within a second: when only such
 * nodes are missing, wait for them a little rather than fail the create.
 */
async function nodesForPlacement(m: ClusterMembership, replicas: number): Promise<ClusterNode[]> {
  const deadline = Date.now() + LEASE_FLAP_WAIT_MS;
  for (;;) {
    const nodes = await m.nodes();
    const alive = nodes.filter((n) => n.alive).length;
    const flapping = nodes.filter((n) => !n.alive && n.state === "up").length;
    if (alive >= replicas || alive + flapping < replicas || Date.now() > deadline) return nodes;
    await new Promise((r) => setTimeout(r, 250));
  }
}

/** The volume's record, or null when it is no replicated volume. */
export async function findClusterVolume(m: ClusterMembership, name: string): Promise<ClusterVolumeRecord | null> {
  return (await m.metadata.get(refs.volume(name)))?.value ?? null;
}

/** Every replicated volume's record, by name. */
export async function listClusterVolumes(m: ClusterMembership): Promise<ClusterVolumeRecord[]> {
  return (await m.metadata.list("volume")).map((r) => r.value);
}

/** The volume's record, or VOLUME_NOT_FOUND. */
export async function getClusterVolume(m: ClusterMembership, name: string): Promise<ClusterVolumeRecord> {
  const record = await findClusterVolume(m, name);
  if (record === null)
    throw new KeelsonError({ code: "VOLUME_NOT_FOUND", message: `replicated volume ${JSON.stringify(name)} does not exist` });
  return record;
}

/**
 * Places `replicas` replicas on distinct live nodes (zones first, this node
 * preferred) and creates each as a local volume there, then records the
 * volume. Idempotent: the same name and size return the record.
 */
export async function createReplicatedVolume(m: ClusterMembership, o: CreateReplicatedOptions): Promise<ClusterVolumeRecord> {
  const existing = await findClusterVolume(m, o.name);
  if (existing !== null) {
    const r = existing;
    if (r.sizeBytes === o.sizeBytes && r.replicas.length === o.replicas) return r;
    throw new KeelsonError({
      code: "ALREADY_EXISTS",
      message: `replicated volume ${o.name} exists with sizeBytes ${r.sizeBytes} and ${r.replicas.length} replicas`,
    });
  }
  checkMinInSync(o.name, o.replicas, o.minInSync);
  const nodes = await nodesForPlacement(m, o.replicas);
  // A node still holding a copy of a deleted volume of this name gets no replica: its copy would be taken for one.
  const leftOn = (await m.metadata.get(refs.leftover(o.name)))?.value.nodes ?? [];
  const candidates = await Promise.all(
    nodes
      .filter((n) => !leftOn.includes(n.nodeId))
      .map(async (n) => ({
        nodeId: n.nodeId,
        zone: n.zone,
        alive: n.alive,
        ...(n.alive ? await peerPoolSpace(m.peers, n) : { freeBytes: 0 }),
      })),
  );
  const chosen = placeReplicas(candidates, { replicas: o.replicas, sizeBytes: o.sizeBytes, preferredNodeId: m.nodeId });
  await createReplicas(
    m,
    o,
    chosen.map((c) => nodes.find((n) => n.nodeId === c.nodeId) as ClusterNode),
  );
  return recordNewVolume(m, {
    name: o.name,
    sizeBytes: o.sizeBytes,
    replicas: chosen.map((c) => c.nodeId),
    inSync: chosen.map((c) => c.nodeId),
    ...(o.qos ? { qos: o.qos, qosClass: o.qosClass ?? "" } : {}),
    minInSync: o.minInSync ?? defaultMinInSync(o.replicas),
    createdAtMs: Date.now(),
  });
}

/** INVALID_ARGUMENT unless `minInSync` is absent or 1 to `replicas`. */
export function checkMinInSync(name: string, replicas: number, minInSync: number | undefined): void {
  if (minInSync === undefined || (Number.isSafeInteger(minInSync) && minInSync >= 1 && minInSync <= replicas)) return;
  throw new KeelsonError({
    code: "INVALID_ARGUMENT",
    message: `minInSync ${minInSync} of volume ${name}: give 1 to ${replicas} (its replicas), or 0 for the default`,
  });
}

/**
 * Records a volume whose replicas were just made (they keep no activity log
 * yet: its first attachment has nothing to resync). A record that appeared
 * meanwhile (a concurrent create of the name) is returned instead.
 */
export async function recordNewVolume(m: ClusterMembership, record: ClusterVolumeRecord): Promise<ClusterVolumeRecord> {
  const ref = refs.volume(record.name);
  const created = await m.metadata.commit({ if: [{ ref, version: null }], put: [{ ref, value: record }] });
  if (!created) return getClusterVolume(m, record.name);
  return record;
}

/**
 * Creates a replica on each of `on`, all at once (a clone of `source` on
 * each, when given: each node must hold it). When one fails, those made
 * are deleted again and the first failure is thrown: a create that fails
 * leaves neither a record nor replicas behind (a retry starts afresh).
 */
export async function createReplicas(
  m: ClusterMembership,
  o: { name: string; sizeBytes: number; labels: Record<string, string>; source?: VolumeSource },
  on: readonly ClusterNode[],
): Promise<Volume[]> {
  const labels = { ...o.labels, [REPLICA_OF_LABEL]: o.name };
  const request = { name: o.name, sizeBytes: o.sizeBytes, labels, ...(o.source ? { source: o.source } : {}) };
  const made = await Promise.allSettled(on.map((node) => m.peers.withPeer(node, (c) => c.createVolume(request))));
  const failed = made.find((r): r is PromiseRejectedResult => r.status === "rejected");
  if (!failed) return made.flatMap((r) => (r.status === "fulfilled" ? [r.value] : []));
  // A concurrent create of the name (a retry) that recorded the volume owns the copies made on
  // those nodes (a create is idempotent there): they are its replicas, not ours to delete.
  if ((await findClusterVolume(m, o.name)) !== null) throw failed.reason;
  const undone = await Promise.allSettled(
    on.flatMap((node, i) => (made[i]?.status === "fulfilled" ? [deleteCopy(m, o.name, node)] : [])),
  );
  const stuck = undone.filter((r) => r.status === "rejected").length;
  if (stuck === 0) throw failed.reason;
  throw new KeelsonError({
    code: "UNAVAILABLE",
    message: `creating replicated volume ${o.name} failed (${messageOf(failed.reason)}), and ${stuck} replica(s) made could not be deleted again; delete the volume on those nodes`,
    cause: failed.reason,
  });
}
