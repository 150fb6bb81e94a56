import { type ActivityLog, isKeelsonError, KeelsonError } from "@keelson/sdk";
import { type ClusterVolumeRecord, minInSyncOf } from "../metadata/index.js";
import type { OpenLocalExport } from "../replication/local-replica.js";
import type { RebuildThrottle } from "../replication/rebuild-throttle.js";
import { type FrontendHooks, ReplicatedVolume } from "../replication/replicated-volume.js";
import type { ResyncPlan } from "../replication/resync.js";
import type { Logger } from "../util/log.js";
import { attachConflict, readAttachments, recordAttachment, removeAttachment } from "./attachments.js";
import { getClusterVolume } from "./cluster-volumes.js";
import { currentEpoch, nextEpoch } from "./epochs.js";
import type { ClusterMembership, ClusterNode } from "./membership.js";
import { snapshotChain } from "./snapshot-copy.js";
import { gatherActivityLogs, markInSync, markOutOfSync, resyncPlanOf } from "./sync-marks.js";

/** Deadline of fencing one replica: an unreachable one must not hold up a failover for long. */
const FENCE_TIMEOUT_MS = 2_000;

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
  /** Where a read-only attach says it is waiting for a replica. */
  log?: Logger;
}

/** Longest a read-only attach waits for the replicas to be made equal after an unclean detach. */
const RECOVERY_DEADLINE_MS = 10 * 60_000;

/**
 * Attaches a replicated volume on this node, writable or read-only, and
 * records the attachment; ATTACHED_ELSEWHERE when another
 * attachment excludes it (see {@link attachConflict}).
 */
export async function attachReplicatedVolume(m: ClusterMembership, name: string, o: AttachOptions): Promise<ReplicatedVolume> {
  await getClusterVolume(m, name);
  const conflict = attachConflict((await readAttachments(m, name)).entries, m.nodeId, o.readOnly, o.takeover);
  if (conflict) throw conflict;
  // A reader takes the current epoch without fencing anyone, so the leader's repair of a volume
  // attached nowhere may take a newer one meanwhile: the reader then opens again at that one.
  for (let attempt = 1; ; attempt++) {
    const rv = o.readOnly ? await openReader(m, name, o) : await openWriter(m, name, o);
    try {
      await recordAttachment(
        m,
        name,
        { nodeId: m.nodeId, readOnly: o.readOnly, epoch: rv.epoch, attachedAtMs: Date.now() },
        o.takeover,
      );
      return rv;
    } catch (error) {
      rv.close();
      if (!o.readOnly || !isKeelsonError(error, "EPOCH_STALE") || attempt >= READER_ATTEMPTS) throw error;
    }
  }
}

/** Times a read-only attach opens again when the epoch moved under it. */
const READER_ATTEMPTS = 3;

/**
 * How long a read-only attach waits for replicas the record holds in sync
 * that did not answer its first open. A node that just started may miss a
 * liveness renewal or answer its first calls late; a reader that took such a
 * replica as faulted would read from fewer copies for the whole attachment
 * (nothing repairs a reader's view), so it opens again while this lasts.
 */
const READER_WAIT_MS = 3_000;
const READER_RETRY_MS = 300;

async function openReader(m: ClusterMembership, name: string, o: AttachOptions): Promise<ReplicatedVolume> {
  const deadline = Date.now() + READER_WAIT_MS;
  for (;;) {
    const rv = await openReaderOnce(m, name, o);
    const missing = await missingInSync(m, name, rv);
    if (missing.length === 0 || Date.now() + READER_RETRY_MS >= deadline) return rv;
    o.log?.log("info", "read-only attach: replicas in sync on record did not answer; opening again", {
      volume: name,
      missing: missing.join(", "),
    });
    rv.close();
    await new Promise((r) => setTimeout(r, READER_RETRY_MS));
  }
}

/** Replicas the record holds in sync that `rv` did not open: "faulted: reason" for each. */
async function missingInSync(m: ClusterMembership, name: string, rv: ReplicatedVolume): Promise<string[]> {
  const faulted = rv.status().filter((r) => r.state === "faulted");
  if (faulted.length === 0) return [];
  const record = await getClusterVolume(m, name);
  return faulted.filter((r) => record.inSync.includes(r.nodeId)).map((r) => `${r.nodeId}: ${r.reason ?? "faulted"}`);
}

/**
 * A read-only frontend at the current epoch (no new one: nothing is fenced).
 * Readers need the in-sync replicas equal: when the last writer did not
 * detach cleanly (its activity log is not empty), a writer is opened here
 * first to resync them, then detached cleanly.
 */
async function openReaderOnce(m: ClusterMembership, name: string, o: AttachOptions): Promise<ReplicatedVolume> {
  let logs = await gatherActivityLogs(m, await getClusterVolume(m, name));
  if (isDirty(logs.plan)) {
    const writer = await openWriter(m, name, o);
    const deadline = Date.now() + RECOVERY_DEADLINE_MS;
    while (writer.resyncing && writer.serving && Date.now() < deadline) await new Promise((r) => setTimeout(r, 100));
    const { clean } = await writer.detach(false);
    // A replica that did not answer before may answer now with a log of its own.
    if (clean) logs = await gatherActivityLogs(m, await getClusterVolume(m, name));
    if (!clean || isDirty(logs.plan)) {
      throw new KeelsonError({
        code: "UNAVAILABLE",
        message: `volume ${name}: its last writer did not detach cleanly and its replicas could not be made equal; retry`,
      });
    }
  }
  let epoch = await currentEpoch(m.metadata, name);
  if (epoch === 0) epoch = await nextEpoch(m.metadata, name, m.nodeId); // never attached: an epoch to open replicas under
  const record = await getClusterVolume(m, name);
  const nodes = await m.nodes();
  return ReplicatedVolume.open(
    name,
    epoch,
    record.replicas.map((nodeId) => {
      const node = nodes.find((n) => n.nodeId === nodeId);
      // Only replicas whose log was read: one that did not answer may differ where only its log says.
      const inSync = node?.alive === true && record.inSync.includes(nodeId) && logs.answered.includes(nodeId);
      return { nodeId, replicaAddress: node?.replicaAddress ?? "", inSync };
    }),
    m.nodeId,
    {
      timeoutMs: o.replicaTimeoutMs,
      readOnly: true,
      sizeBytes: record.sizeBytes,
      ...(o.openLocal ? { openLocal: o.openLocal } : {}),
      dial: m.replicaDial,
    },
  );
}

function isDirty(plan: ResyncPlan): boolean {
  return plan === "all" || plan.length > 0;
}

/** A writable frontend for the leader's repair of a volume attached nowhere (see idle-repair.ts). */
export function openRepairFrontend(m: ClusterMembership, name: string, o: AttachOptions): Promise<ReplicatedVolume> {
  return openWriter(m, name, o);
}

/**
 * A writable frontend on this node: takes a new epoch, fences every
 * reachable replica at it (so any older frontend gets nothing more
 * acknowledged), then connects to the replicas under that epoch and resyncs
 * what the previous frontend's activity log names. UNAVAILABLE, having
 * changed nothing, when no in-sync replica answers.
 */
async function openWriter(m: ClusterMembership, name: string, o: AttachOptions): Promise<ReplicatedVolume> {
  const record = await getClusterVolume(m, name);
  const { epoch, reachable } = await fenceAtNewEpoch(m, record);
  // The logs the in-sync replicas keep, as each answered its fence: no older frontend can change
  // them any more. A replica not reached is not read from, so only the reached ones' differences matter.
  const resync = resyncPlanOf(reachable.filter((r) => record.inSync.includes(r.nodeId)).map((r) => r.activityLog));
  return ReplicatedVolume.open(
    name,
    epoch,
    record.replicas.map((nodeId) => {
      const node = reachable.find((n) => n.nodeId === nodeId);
      // An in-sync replica that did not answer stays in sync in the record: unreachable is not out of
      // sync. The frontend records it out of sync before it acknowledges a write that replica misses.
      return { nodeId, replicaAddress: node?.replicaAddress ?? "", inSync: record.inSync.includes(nodeId) };
    }),
    m.nodeId,
    {
      timeoutMs: o.replicaTimeoutMs,
      hooks: frontendHooks(m, name, epoch),
      resync,
      rebuildThrottle: o.rebuildThrottle,
      minInSync: minInSyncOf(record),
      sizeBytes: record.sizeBytes,
      ...(o.openLocal ? { openLocal: o.openLocal } : {}),
      dial: m.replicaDial,
    },
  );
}

/**
 * Takes the volume's next epoch and fences every replica it can reach at it
 * (any frontend at an older epoch gets nothing more acknowledged). First,
 * unless `needInSync` is false, it makes sure an in-sync replica answers: a takeover that cannot serve the
 * volume must not take an epoch (that fences the frontend still serving it)
 * nor change the record. UNAVAILABLE when none answers.
 */
async function fenceAtNewEpoch(
  m: ClusterMembership,
  record: ClusterVolumeRecord,
  needInSync = true,
): Promise<{ epoch: number; reachable: FencedHolder[] }> {
  const { name } = record;
  const nodes = await m.nodes();
  const holders = record.replicas
    .map((id) => nodes.find((n) => n.nodeId === id))
    .filter((n): n is ClusterNode => n !== undefined);
  const inSync = holders.filter((n) => record.inSync.includes(n.nodeId));
  // The first answer is enough: a dead node's probe must not add its timeout to a failover.
  if (needInSync) {
    // Its own pool's replica (replicaOnly): VOLUME_NOT_FOUND where the node holds none.
    const probes = inSync.map((n) => m.peers.withPeer(n, (c) => c.getVolume({ name, replicaOnly: true }), FENCE_TIMEOUT_MS));
    if (!(await anyAnswers(probes))) throw noInSyncReplica(name, record.inSync);
  }
  const epoch = await nextEpoch(m.metadata, name, m.nodeId);
  const fenced = await Promise.all(
    holders.map((n) =>
      m.peers
        .withPeer(n, (c) => c.fenceVolume({ name, epoch }), FENCE_TIMEOUT_MS)
        .then(
          (v): FencedHolder => ({ ...n, activityLog: v.activityLog }),
          () => null,
        ),
    ),
  );
  const reachable = fenced.filter((n): n is FencedHolder => n !== null);
  // They answered a moment ago; one that stopped since fails this attach, with the record unchanged.
  if (needInSync && !reachable.some((n) => record.inSync.includes(n.nodeId))) throw noInSyncReplica(name, record.inSync);
  return { epoch, reachable };
}

/** A replica's node that answered its fence, with the activity log its replica keeps. */
interface FencedHolder extends ClusterNode {
  activityLog: ActivityLog | undefined;
}

/** Resolves true as soon as one of `calls` succeeds, false once all have failed. */
function anyAnswers(calls: readonly Promise<unknown>[]): Promise<boolean> {
  return Promise.any(calls).then(
    () => true,
    () => false,
  );
}

function noInSyncReplica(name: string, inSync: readonly string[]): KeelsonError {
  return new KeelsonError({
    code: "UNAVAILABLE",
    message: `volume ${name}: no in-sync replica answers (in sync: ${inSync.join(", ") || "none"}); nothing was changed, retry once one is reachable`,
  });
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
  // Fencing what answers needs no in-sync replica: nothing is served here, and the record is left as it is.
  if (!entry.readOnly) await fenceAtNewEpoch(m, await getClusterVolume(m, name), false);
  await removeAttachment(m, name, nodeId, entry.epoch);
}

/**
 * Fences every frontend of the volume, wherever it runs: takes a new epoch
 * in etcd (a frontend at an older one can record nothing there, so it
 * acknowledges nothing more) and raises every reachable replica to it (they
 * refuse the old frontends' I/O). Replicas that cannot be reached are left:
 * the epoch in etcd is the authority. Returns the new epoch.
 */
export async function fenceEveryFrontend(m: ClusterMembership, name: string): Promise<number> {
  const record = await getClusterVolume(m, name);
  const nodes = await m.nodes();
  const epoch = await nextEpoch(m.metadata, name, m.nodeId);
  await Promise.allSettled(
    record.replicas.flatMap((id) => {
      const node = nodes.find((n) => n.nodeId === id);
      return node?.alive ? [m.peers.withPeer(node, (c) => c.fenceVolume({ name, epoch }), FENCE_TIMEOUT_MS)] : [];
    }),
  );
  return epoch;
}

/** What a frontend at `epoch` needs from the cluster's metadata and the peers. */
function frontendHooks(m: ClusterMembership, name: string, epoch: number): FrontendHooks {
  return {
    recordFault: (nodeId) => markOutOfSync(m, name, nodeId, epoch),
    recordInSync: (nodeId) => markInSync(m, name, nodeId, epoch),
    prepareReplica: async (nodeId) => {
      const node = (await m.nodes()).find((n) => n.nodeId === nodeId);
      if (!node?.alive) throw new KeelsonError({ code: "UNAVAILABLE", message: `node ${nodeId} is not alive` });
      const fenced = await m.peers.withPeer(node, (c) => c.fenceVolume({ name, epoch }), FENCE_TIMEOUT_MS);
      return { nodeId, replicaAddress: node.replicaAddress ?? "", keptLog: fenced.activityLog };
    },
    replicaSet: async () => (await getClusterVolume(m, name)).replicas,
    snapshots: snapshotChain(m, name),
  };
}
