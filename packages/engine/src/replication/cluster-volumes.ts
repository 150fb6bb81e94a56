import { isKeelsonError, KeelsonError } from "@keelson/sdk";
import { currentEpoch, epochKey, nextEpoch, supersededError } from "../cluster/epochs.js";
import { type ClusterMembership, type ClusterNode, KEY_PREFIX } from "../cluster/membership.js";
import { withPeer } from "../cluster/peers.js";
import { placeReplicas } from "../cluster/placement.js";
import { ACTIVITY_EXTENT_BYTES, type ActivityExtents } from "./activity-log.js";
import { attachConflict, readAttachments, recordAttachment, removeAttachment } from "./attachments.js";
import type { IdleVolumeRepairer } from "./idle-repair.js";
import type { OpenLocalExport } from "./local-replica.js";
import type { RebuildThrottle } from "./rebuild-throttle.js";
import { RegionMap } from "./region-map.js";
import { type FrontendHooks, ReplicatedVolume } from "./replicated-volume.js";
import type { ResyncPlan } from "./resync.js";

const VOLUMES = `${KEY_PREFIX}/volumes/`;
const ACTIVITY = `${KEY_PREFIX}/activity/`;
/** Deadline of fencing one replica: an unreachable one must not hold up a failover for long. */
const FENCE_TIMEOUT_MS = 2_000;

/** A replicated volume as the cluster records it in etcd. */
export interface ClusterVolumeRecord {
  name: string;
  sizeBytes: number;
  /** Nodes holding a replica. */
  replicas: string[];
  /**
   * Replicas known to hold every acknowledged write. A frontend takes a
   * replica out of this set (in etcd, under its epoch) before it acknowledges
   * a write that replica missed, so a later attach never serves from it.
   */
  inSync: string[];
  /** Nodes whose replica was replaced: the stale copy left there is deleted once the node is back. */
  retired?: string[];
  createdAtMs: number;
}

/** Request of {@link createReplicatedVolume}. */
export interface CreateReplicatedOptions {
  name: string;
  sizeBytes: number;
  replicas: number;
  labels: Record<string, string>;
}

/** Pauses between attempts to learn a peer's free space (a busy or just-started peer gets about 2 s). */
const FREE_SPACE_RETRY_DELAYS_MS = [200, 600, 1200];

/** A live peer's free pool bytes, or why it could not be learned after a few attempts. */
async function peerFreeBytes(node: ClusterNode): Promise<{ freeBytes: number; problem?: string }> {
  let last: unknown;
  for (let attempt = 0; attempt <= FREE_SPACE_RETRY_DELAYS_MS.length; attempt++) {
    if (attempt > 0) await new Promise((r) => setTimeout(r, FREE_SPACE_RETRY_DELAYS_MS[attempt - 1]));
    try {
      return { freeBytes: await withPeer(node, async (c) => (await c.getNode()).pool.freeBytes) };
    } catch (error) {
      last = error;
    }
  }
  return { freeBytes: 0, problem: `GetNode at ${node.controlAddress} failed: ${(last as Error).message ?? String(last)}` };
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
  const json = await m.client.get(`${VOLUMES}${name}`).string();
  return json === null ? null : (JSON.parse(json) as ClusterVolumeRecord);
}

/** The volume's record, or VOLUME_NOT_FOUND. */
export async function getClusterVolume(m: ClusterMembership, name: string): Promise<ClusterVolumeRecord> {
  const json = await m.client.get(`${VOLUMES}${name}`).string();
  if (json === null)
    throw new KeelsonError({ code: "VOLUME_NOT_FOUND", message: `replicated volume ${JSON.stringify(name)} does not exist` });
  return JSON.parse(json) as ClusterVolumeRecord;
}

/**
 * Places `replicas` replicas on distinct live nodes (zones first, this node
 * preferred) and creates each as a local volume there, then records the
 * volume in etcd. Idempotent: the same name and size return the record.
 */
export async function createReplicatedVolume(m: ClusterMembership, o: CreateReplicatedOptions): Promise<ClusterVolumeRecord> {
  const existing = await m.client.get(`${VOLUMES}${o.name}`).string();
  if (existing !== null) {
    const r = JSON.parse(existing) as ClusterVolumeRecord;
    if (r.sizeBytes === o.sizeBytes && r.replicas.length === o.replicas) return r;
    throw new KeelsonError({
      code: "ALREADY_EXISTS",
      message: `replicated volume ${o.name} exists with sizeBytes ${r.sizeBytes} and ${r.replicas.length} replicas`,
    });
  }
  const nodes = await nodesForPlacement(m, o.replicas);
  const candidates = await Promise.all(
    nodes.map(async (n) => ({
      nodeId: n.nodeId,
      zone: n.zone,
      alive: n.alive,
      ...(n.alive ? await peerFreeBytes(n) : { freeBytes: 0 }),
    })),
  );
  const chosen = placeReplicas(candidates, o.replicas, m.nodeId);
  for (const c of chosen) {
    const node = nodes.find((n) => n.nodeId === c.nodeId) as ClusterNode;
    await withPeer(node, (client) =>
      client.createVolume({ name: o.name, sizeBytes: o.sizeBytes, labels: { ...o.labels, "keelson.io/replica-of": o.name } }),
    );
  }
  const record: ClusterVolumeRecord = {
    name: o.name,
    sizeBytes: o.sizeBytes,
    replicas: chosen.map((c) => c.nodeId),
    inSync: chosen.map((c) => c.nodeId),
    createdAtMs: Date.now(),
  };
  const key = `${VOLUMES}${o.name}`;
  // An empty activity log: the first attachment has nothing to resync.
  const emptyLog: ActivityRecord = { epoch: 0, extentBytes: ACTIVITY_EXTENT_BYTES, bitmap: "" };
  const result = await m.client
    .if(key, "Create", "==", 0)
    .then(m.client.put(key).value(JSON.stringify(record)), m.client.put(`${ACTIVITY}${o.name}`).value(JSON.stringify(emptyLog)))
    .commit();
  if (!result.succeeded) return getClusterVolume(m, o.name);
  return record;
}

/** How a volume is attached. */
export interface AttachOptions {
  replicaTimeoutMs: number;
  /** Paces this node's rebuild copies. */
  rebuildThrottle: RebuildThrottle;
  /** This node's exports in-process (its own replica without NBD). */
  openLocal?: OpenLocalExport;
  readOnly: boolean;
  /** Take a writable attachment over from another node. */
  takeover: boolean;
}

/** Longest a read-only attach waits for the replicas to be made equal after an unclean detach. */
const RECOVERY_DEADLINE_MS = 10 * 60_000;

/**
 * Attaches a replicated volume on this node, writable or read-only, and
 * records the attachment in etcd; ATTACHED_ELSEWHERE when another
 * attachment excludes it (see {@link attachConflict}).
 */
export async function attachReplicatedVolume(m: ClusterMembership, name: string, o: AttachOptions): Promise<ReplicatedVolume> {
  await getClusterVolume(m, name);
  const conflict = attachConflict((await readAttachments(m, name)).entries, m.nodeId, o.readOnly, o.takeover);
  if (conflict) throw conflict;
  const rv = o.readOnly ? await openReader(m, name, o) : await openWriter(m, name, o);
  try {
    await recordAttachment(
      m,
      name,
      { nodeId: m.nodeId, readOnly: o.readOnly, epoch: rv.epoch, attachedAtMs: Date.now() },
      o.takeover,
    );
  } catch (error) {
    rv.close();
    throw error;
  }
  return rv;
}

/**
 * A read-only frontend at the current epoch (no new one: nothing is fenced).
 * Readers need the in-sync replicas equal: when the last writer did not
 * detach cleanly (its activity log is not empty), a writer is opened here
 * first to resync them, then detached cleanly.
 */
async function openReader(m: ClusterMembership, name: string, o: AttachOptions): Promise<ReplicatedVolume> {
  const plan = await loadActivityLog(m, name);
  if (plan === "all" || plan.length > 0) {
    const writer = await openWriter(m, name, o);
    const deadline = Date.now() + RECOVERY_DEADLINE_MS;
    while (writer.resyncing && writer.serving && Date.now() < deadline) await new Promise((r) => setTimeout(r, 100));
    const { clean } = await writer.detach(false);
    if (!clean) {
      throw new KeelsonError({
        code: "UNAVAILABLE",
        message: `volume ${name}: its last writer did not detach cleanly and its replicas could not be made equal; retry`,
      });
    }
  }
  let epoch = await currentEpoch(m.client, name);
  if (epoch === 0) epoch = await nextEpoch(m.client, name); // never attached: an epoch to open replicas under
  const record = await getClusterVolume(m, name);
  const nodes = await m.nodes();
  return ReplicatedVolume.open(
    name,
    epoch,
    record.replicas.map((nodeId) => {
      const node = nodes.find((n) => n.nodeId === nodeId);
      return { nodeId, nbdAddress: node?.nbdAddress ?? "", inSync: node?.alive === true && record.inSync.includes(nodeId) };
    }),
    m.nodeId,
    { timeoutMs: o.replicaTimeoutMs, readOnly: true, ...(o.openLocal ? { openLocal: o.openLocal } : {}) },
  );
}

/** A writable frontend for the leader's repair of a volume attached nowhere (see {@link IdleVolumeRepairer}). */
export function openRepairFrontend(m: ClusterMembership, name: string, o: AttachOptions): Promise<ReplicatedVolume> {
  return openWriter(m, name, o);
}

/**
 * A writable frontend on this node: takes a new epoch from etcd, fences
 * every reachable replica at it (so any older frontend gets nothing more
 * acknowledged), then connects to the replicas under that epoch and resyncs
 * what the previous frontend's activity log names. UNAVAILABLE when no
 * replica can be fenced.
 */
async function openWriter(m: ClusterMembership, name: string, o: AttachOptions): Promise<ReplicatedVolume> {
  const record = await getClusterVolume(m, name);
  const { epoch, reachable } = await fenceAtNewEpoch(m, record);
  // Read after the new epoch is taken: no older frontend can change the log any more.
  const resync = await loadActivityLog(m, name);
  return ReplicatedVolume.open(
    name,
    epoch,
    record.replicas.map((nodeId) => {
      const node = reachable.find((n) => n.nodeId === nodeId);
      return { nodeId, nbdAddress: node?.nbdAddress ?? "", inSync: node !== undefined && record.inSync.includes(nodeId) };
    }),
    m.nodeId,
    {
      timeoutMs: o.replicaTimeoutMs,
      hooks: frontendHooks(m, name, epoch, record.sizeBytes),
      resync,
      rebuildThrottle: o.rebuildThrottle,
      ...(o.openLocal ? { openLocal: o.openLocal } : {}),
    },
  );
}

/**
 * Takes the volume's next epoch and fences every replica it can reach at it
 * (any frontend at an older epoch gets nothing more acknowledged); those it
 * cannot reach are recorded out of sync. UNAVAILABLE when none is reached.
 */
async function fenceAtNewEpoch(
  m: ClusterMembership,
  record: ClusterVolumeRecord,
): Promise<{ epoch: number; reachable: ClusterNode[] }> {
  const { name } = record;
  const nodes = await m.nodes();
  const epoch = await nextEpoch(m.client, name);
  const holders = record.replicas
    .map((id) => nodes.find((n) => n.nodeId === id))
    .filter((n): n is ClusterNode => n !== undefined);
  const fenced = await Promise.all(
    holders.map((n) =>
      withPeer(n, (c) => c.fenceVolume({ name, epoch }), FENCE_TIMEOUT_MS).then(
        () => n,
        () => null,
      ),
    ),
  );
  const reachable = fenced.filter((n): n is ClusterNode => n !== null);
  if (reachable.length === 0) {
    throw new KeelsonError({ code: "UNAVAILABLE", message: `no replica of ${name} could be fenced at epoch ${epoch}` });
  }
  const unreachable = holders.filter((n) => !reachable.includes(n)).map((n) => n.nodeId);
  for (const nodeId of unreachable) await markOutOfSync(m, name, nodeId, epoch);
  return { epoch, reachable };
}

/**
 * Removes the attachment of a node that cannot be asked to detach (down or
 * not answering). A writer there may still be running: it is fenced first,
 * at a new epoch, so a reader attached next cannot read beside it. Its
 * activity log stays, so the next attachment resyncs what it left.
 */
export async function forgetAttachment(m: ClusterMembership, name: string, nodeId: string): Promise<void> {
  const entry = (await readAttachments(m, name)).entries.find((e) => e.nodeId === nodeId);
  if (!entry) return;
  if (!entry.readOnly) await fenceAtNewEpoch(m, await getClusterVolume(m, name));
  await removeAttachment(m, name, nodeId, entry.epoch);
}

/** The activity log as etcd keeps it: one bit per extent, or every extent. */
interface ActivityRecord {
  epoch: number;
  extentBytes: number;
  all?: boolean;
  /** Base64 bitmap of the extents in the log. */
  bitmap?: string;
}

/**
 * What the last frontend's activity log says may differ between in-sync
 * replicas: its extents as byte ranges, or "all" when there is no log (an
 * attachment that never wrote one) or it says so.
 */
export async function loadActivityLog(m: ClusterMembership, name: string): Promise<ResyncPlan> {
  const json = await m.client.get(`${ACTIVITY}${name}`).string();
  if (json === null) return "all";
  const record = JSON.parse(json) as ActivityRecord;
  if (record.all || record.bitmap === undefined) return "all";
  if (record.bitmap === "") return [];
  const bits = Buffer.from(record.bitmap, "base64");
  const ranges: { offset: number; length: number }[] = [];
  for (let e = 0; e < bits.length * 8; e++) {
    if (((bits[e >> 3] as number) & (1 << (e & 7))) !== 0) {
      ranges.push({ offset: e * record.extentBytes, length: record.extentBytes });
    }
  }
  return ranges;
}

/** Saves the activity log of the frontend at `epoch`, only while that is the volume's current epoch. */
async function saveActivityLog(
  m: ClusterMembership,
  name: string,
  epoch: number,
  sizeBytes: number,
  extents: ActivityExtents,
): Promise<void> {
  const record: ActivityRecord = { epoch, extentBytes: ACTIVITY_EXTENT_BYTES };
  if (extents === "all") record.all = true;
  else {
    const map = new RegionMap(sizeBytes, ACTIVITY_EXTENT_BYTES);
    for (const e of extents) map.add(e);
    record.bitmap = Buffer.from(map.toBytes()).toString("base64");
  }
  const result = await m.client
    .if(epochKey(name), "Value", "==", String(epoch))
    .then(m.client.put(`${ACTIVITY}${name}`).value(JSON.stringify(record)))
    .commit();
  if (!result.succeeded) {
    // The epoch is the only compare, so a failure means a newer epoch exists.
    throw (
      (await supersededError(m.client, name, epoch)) ??
      new KeelsonError({ code: "UNAVAILABLE", message: `volume ${name}: the activity log's guard failed; retry` })
    );
  }
}

/** What a frontend at `epoch` needs from etcd and the peers. */
function frontendHooks(m: ClusterMembership, name: string, epoch: number, sizeBytes: number): FrontendHooks {
  return {
    saveActivity: (extents) =>
      withDeadline(
        saveActivityLog(m, name, epoch, sizeBytes, extents),
        SYNC_UPDATE_DEADLINE_MS,
        `saving the activity log of ${name}`,
      ),
    recordFault: (nodeId) => markOutOfSync(m, name, nodeId, epoch),
    recordInSync: (nodeId) => markInSync(m, name, nodeId, epoch),
    prepareReplica: async (nodeId) => {
      const node = (await m.nodes()).find((n) => n.nodeId === nodeId);
      if (!node?.alive) throw new KeelsonError({ code: "UNAVAILABLE", message: `node ${nodeId} is not alive` });
      await withPeer(node, (c) => c.fenceVolume({ name, epoch }), FENCE_TIMEOUT_MS);
      return { nodeId, nbdAddress: node.nbdAddress };
    },
    replicaSet: async () => (await getClusterVolume(m, name)).replicas,
  };
}

/** Attempts of the compare-and-swap that takes a replica out of sync. */
const MAX_SYNC_UPDATE_ATTEMPTS = 16;

/**
 * Takes a replica out of the volume's in-sync set, only while `epoch` is
 * still the volume's current epoch (EPOCH_STALE otherwise: a fenced frontend
 * must not change the record).
 */
export function markOutOfSync(m: ClusterMembership, name: string, nodeId: string, epoch: number): Promise<void> {
  // Bounded: a frontend cut off from etcd must fail the write soon, not hang it.
  return withDeadline(
    casOutOfSync(m, name, nodeId, epoch),
    SYNC_UPDATE_DEADLINE_MS,
    `recording replica ${nodeId} of ${name} out of sync`,
  );
}

/** Longest a frontend waits on etcd to record a replica out of sync. */
const SYNC_UPDATE_DEADLINE_MS = 3_000;

function withDeadline<T>(p: Promise<T>, ms: number, what: string): Promise<T> {
  let timer: NodeJS.Timeout | undefined;
  const deadline = new Promise<never>((_, reject) => {
    timer = setTimeout(
      () => reject(new KeelsonError({ code: "UNAVAILABLE", message: `${what}: etcd did not answer in ${ms} ms` })),
      ms,
    );
  });
  return Promise.race([p, deadline]).finally(() => clearTimeout(timer));
}

function casOutOfSync(m: ClusterMembership, name: string, nodeId: string, epoch: number): Promise<void> {
  return updateUnderEpoch(m, name, epoch, (r) =>
    r.inSync.includes(nodeId) ? { ...r, inSync: r.inSync.filter((id) => id !== nodeId) } : null,
  );
}

/** Puts a rebuilt replica back in the in-sync set, only while `epoch` is the volume's current epoch. */
export function markInSync(m: ClusterMembership, name: string, nodeId: string, epoch: number): Promise<void> {
  return withDeadline(
    updateUnderEpoch(m, name, epoch, (r) => {
      if (r.inSync.includes(nodeId)) return null;
      if (!r.replicas.includes(nodeId)) {
        throw new KeelsonError({ code: "UNAVAILABLE", message: `${nodeId} no longer holds a replica of ${name}` });
      }
      return { ...r, inSync: [...r.inSync, nodeId] };
    }),
    SYNC_UPDATE_DEADLINE_MS,
    `recording replica ${nodeId} of ${name} in sync`,
  );
}

/**
 * Changes the volume's record (`change` returns null for no change) with a
 * compare-and-swap that holds only while `epoch` is the current epoch.
 */
async function updateUnderEpoch(
  m: ClusterMembership,
  name: string,
  epoch: number,
  change: (r: ClusterVolumeRecord) => ClusterVolumeRecord | null,
): Promise<void> {
  const key = `${VOLUMES}${name}`;
  for (let attempt = 0; attempt < MAX_SYNC_UPDATE_ATTEMPTS; attempt++) {
    const json = await m.client.get(key).string();
    if (json === null) throw new KeelsonError({ code: "VOLUME_NOT_FOUND", message: `replicated volume ${name} vanished` });
    const updated = change(JSON.parse(json) as ClusterVolumeRecord);
    if (updated === null) return;
    const result = await m.client
      .if(epochKey(name), "Value", "==", String(epoch))
      .and(key, "Value", "==", json)
      .then(m.client.put(key).value(JSON.stringify(updated)))
      .commit();
    if (result.succeeded) return;
    const stale = await supersededError(m.client, name, epoch);
    if (stale) throw stale;
  }
  throw new KeelsonError({ code: "UNAVAILABLE", message: `volume ${name}: its record changed under every attempt to update it` });
}

/** How long a replica's node may stay down before the leader places the replica elsewhere, unless configured. */
export const DEFAULT_REPLACE_AFTER_MS = 60_000;

/** What one repair pass did. */
export interface RepairReport {
  /** `volume: from -> to` for each replica placed on a new node. */
  replaced: string[];
  /** Stale copies of replaced replicas deleted from nodes that came back. */
  removed: string[];
  /** Volumes left degraded, and why (no spare node, a peer did not answer, ...). */
  stuck: string[];
  /** Volumes attached nowhere whose lagging replicas the leader started rebuilding. */
  rebuilding: string[];
}

/**
 * The leader's repair of degraded volumes: a replica out of sync whose node
 * has been down for `replaceAfterMs` (or is gone from the cluster) is placed
 * on a live node that holds none of the volume's replicas (another zone
 * first, most free space first); the record then names the new node and the
 * volume's frontend rebuilds it. A replica whose node is up is left to the
 * frontend, which rebuilds it where it is.
 */
export async function repairDegradedVolumes(
  m: ClusterMembership,
  replaceAfterMs: number,
  idle?: IdleVolumeRepairer,
): Promise<RepairReport> {
  const report: RepairReport = { replaced: [], removed: [], stuck: [], rebuilding: [] };
  const nodes = await m.nodes();
  const records = Object.values(await m.client.getAll().prefix(VOLUMES).strings()).map(
    (json) => JSON.parse(json) as ClusterVolumeRecord,
  );
  const now = Date.now();
  for (const record of records) {
    for (const nodeId of record.retired ?? []) {
      const node = nodes.find((n) => n.nodeId === nodeId);
      if (!node?.alive) continue;
      try {
        await removeRetiredCopy(m, record.name, node);
        report.removed.push(`${record.name}: stale copy on ${nodeId}`);
      } catch (error) {
        report.stuck.push(`${record.name}: stale copy on ${nodeId} not removed: ${(error as Error).message}`);
      }
    }
    for (const nodeId of record.replicas) {
      if (record.inSync.includes(nodeId)) continue;
      const node = nodes.find((n) => n.nodeId === nodeId);
      const lost = !node || (!node.alive && node.state === "down" && now - node.stateSinceMs >= replaceAfterMs);
      if (!lost) continue;
      try {
        const to = await replaceReplica(m, record, nodeId, nodes);
        report.replaced.push(`${record.name}: ${nodeId} -> ${to}`);
      } catch (error) {
        report.stuck.push(`${record.name}: replica on ${nodeId} not replaced: ${(error as Error).message}`);
      }
      break; // one replacement per volume per pass; the record changed
    }
  }
  if (idle) report.rebuilding = await idle.pass(records, nodes);
  return report;
}

async function replaceReplica(
  m: ClusterMembership,
  record: ClusterVolumeRecord,
  lostNodeId: string,
  nodes: readonly ClusterNode[],
): Promise<string> {
  // A node with a stale copy not yet removed is no spare (its copy would clash with a new one).
  const spares = nodes.filter(
    (n) => n.alive && !record.replicas.includes(n.nodeId) && !(record.retired ?? []).includes(n.nodeId),
  );
  const candidates = await Promise.all(
    spares.map(async (n) => ({ nodeId: n.nodeId, zone: n.zone, alive: true, ...(await peerFreeBytes(n)) })),
  );
  const usedZones = new Set(
    record.replicas.filter((id) => id !== lostNodeId).map((id) => nodes.find((n) => n.nodeId === id)?.zone),
  );
  const usable = candidates.filter((c) => c.freeBytes > 0).sort((a, b) => b.freeBytes - a.freeBytes);
  const pick = usable.find((c) => !usedZones.has(c.zone)) ?? usable[0];
  if (!pick) {
    const why = candidates.map((c) => `${c.nodeId}: ${c.problem ?? "pool full"}`).join("; ");
    throw new KeelsonError({ code: "NO_SPACE", message: `no live node without a replica can take one${why ? ` (${why})` : ""}` });
  }
  const node = nodes.find((n) => n.nodeId === pick.nodeId) as ClusterNode;
  await withPeer(node, (c) =>
    c.createVolume({ name: record.name, sizeBytes: record.sizeBytes, labels: { "keelson.io/replica-of": record.name } }),
  );
  const key = `${VOLUMES}${record.name}`;
  const current = await m.client.get(key).string();
  if (current === null) throw new KeelsonError({ code: "VOLUME_NOT_FOUND", message: `volume ${record.name} was deleted` });
  const latest = JSON.parse(current) as ClusterVolumeRecord;
  if (!latest.replicas.includes(lostNodeId) || latest.inSync.includes(lostNodeId)) {
    throw new KeelsonError({ code: "UNAVAILABLE", message: `the record of ${record.name} changed; next pass` });
  }
  const updated: ClusterVolumeRecord = {
    ...latest,
    replicas: latest.replicas.map((id) => (id === lostNodeId ? pick.nodeId : id)),
    retired: [...(latest.retired ?? []).filter((id) => id !== pick.nodeId), lostNodeId],
  };
  const result = await m.client
    .if(key, "Value", "==", current)
    .then(m.client.put(key).value(JSON.stringify(updated)))
    .commit();
  if (!result.succeeded)
    throw new KeelsonError({ code: "UNAVAILABLE", message: `the record of ${record.name} changed; next pass` });
  return pick.nodeId;
}

/**
 * Deletes the stale local copy a replaced replica left on `node` (only a
 * volume marked as a replica of `name`), then drops the node from the
 * record's retired list. A node the volume was placed on again keeps its copy.
 */
async function removeRetiredCopy(m: ClusterMembership, name: string, node: ClusterNode): Promise<void> {
  const key = `${VOLUMES}${name}`;
  const json = await m.client.get(key).string();
  if (json === null) return;
  const record = JSON.parse(json) as ClusterVolumeRecord;
  if (!record.replicas.includes(node.nodeId)) {
    await withPeer(node, async (c) => {
      const local = await c.getVolume({ name }).catch((e: unknown) => {
        if (isKeelsonError(e, "VOLUME_NOT_FOUND")) return null;
        throw e;
      });
      if (local && local.labels["keelson.io/replica-of"] === name) await c.deleteVolume({ name, force: true });
    });
  }
  const updated = { ...record, retired: (record.retired ?? []).filter((id) => id !== node.nodeId) };
  await m.client
    .if(key, "Value", "==", json)
    .then(m.client.put(key).value(JSON.stringify(updated)))
    .commit();
}
