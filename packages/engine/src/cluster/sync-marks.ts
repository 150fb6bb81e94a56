import { type ActivityLog, KeelsonError } from "@keelson/sdk";
import { type ClusterVolumeRecord, minInSyncOf, refs } from "../metadata/index.js";
import type { ResyncPlan } from "../replication/resync.js";
import { supersededError, whileEpoch } from "./epochs.js";
import type { ClusterMembership } from "./membership.js";

/**
 * What the activity logs kept by the in-sync replicas say may differ between
 * them: the union of their extents as byte ranges, or "all" when one says so.
 * A replica that keeps none never had a frontend write to it. The logs live
 * with the data (a frontend saves them on its replicas before it writes), so
 * reading them needs the replicas, not etcd.
 */
export function resyncPlanOf(logs: readonly (ActivityLog | undefined)[]): ResyncPlan {
  const ranges = new Map<number, { offset: number; length: number }>();
  for (const log of logs) {
    if (!log) continue;
    if (log.all) return "all";
    for (const e of log.extents) {
      const offset = e * log.extentBytes;
      const known = ranges.get(offset);
      if (!known || known.length < log.extentBytes) ranges.set(offset, { offset, length: log.extentBytes });
    }
  }
  return [...ranges.values()].sort((a, b) => a.offset - b.offset);
}

/** Longest wait for one replica's answer when its activity log is gathered. */
const GATHER_TIMEOUT_MS = 2_000;

/**
 * Gathers the activity logs of the volume's in-sync replicas on live nodes
 * (without fencing anyone: for a reader or a snapshot, which must know
 * whether the last writer left the replicas different): their plan (see
 * {@link resyncPlanOf}) and the nodes that answered. Only those may be read
 * from: one that did not answer may differ where only its own log says.
 */
export async function gatherActivityLogs(
  m: ClusterMembership,
  record: ClusterVolumeRecord,
): Promise<{ plan: ResyncPlan; answered: string[] }> {
  const nodes = await m.nodes();
  const holders = record.inSync.flatMap((id) => nodes.filter((n) => n.nodeId === id && n.alive));
  const answers = await Promise.allSettled(
    holders.map((n) => m.peers.withPeer(n, (c) => c.getVolume({ name: record.name, replicaOnly: true }), GATHER_TIMEOUT_MS)),
  );
  const answered = holders.filter((_, i) => answers[i]?.status === "fulfilled").map((n) => n.nodeId);
  return { plan: resyncPlanOf(answers.flatMap((a) => (a.status === "fulfilled" ? [a.value.activityLog] : []))), answered };
}

/** Attempts of the compare-and-swap that takes a replica out of sync. */
const MAX_SYNC_UPDATE_ATTEMPTS = 16;

/**
 * Takes a replica out of the volume's in-sync set, only while `epoch` is
 * still the volume's current epoch (EPOCH_STALE otherwise: a fenced frontend
 * must not change the record). "held" when the set is at the write quorum
 * (or one replica): the replica stays in it, and the caller may acknowledge
 * no write it misses.
 */
export function markOutOfSync(m: ClusterMembership, name: string, nodeId: string, epoch: number): Promise<"recorded" | "held"> {
  // Bounded: a frontend cut off from the store must fail the write soon, not hang it.
  return withDeadline(
    casOutOfSync(m, name, nodeId, epoch),
    SYNC_UPDATE_DEADLINE_MS,
    `recording replica ${nodeId} of ${name} out of sync`,
  );
}

/** Longest a frontend waits on the store to record a replica out of sync. */
export const SYNC_UPDATE_DEADLINE_MS = 3_000;

/** `p`, or UNAVAILABLE after `ms`: a frontend cut off from the store must fail its write soon, not hang it. */
export function withDeadline<T>(p: Promise<T>, ms: number, what: string): Promise<T> {
  let timer: NodeJS.Timeout | undefined;
  const deadline = new Promise<never>((_, reject) => {
    timer = setTimeout(
      () => reject(new KeelsonError({ code: "UNAVAILABLE", message: `${what}: etcd did not answer in ${ms} ms` })),
      ms,
    );
  });
  return Promise.race([p, deadline]).finally(() => clearTimeout(timer));
}

async function casOutOfSync(m: ClusterMembership, name: string, nodeId: string, epoch: number): Promise<"recorded" | "held"> {
  let held = false;
  await updateUnderEpoch(m, name, epoch, (r) => {
    held = false;
    if (!r.inSync.includes(nodeId)) return null;
    // The set never shrinks below the write quorum (nor to nothing). A frontend that would take it
    // there cannot acknowledge writes anyway; and a frontend cut off from the others (the usual
    // cause) must not leave a record that names only itself, or no other node could ever take over.
    if (r.inSync.length - 1 < minInSyncOf(r)) {
      held = true;
      return null;
    }
    return { ...r, inSync: r.inSync.filter((id) => id !== nodeId) };
  });
  return held ? "held" : "recorded";
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
  const ref = refs.volume(name);
  for (let attempt = 0; attempt < MAX_SYNC_UPDATE_ATTEMPTS; attempt++) {
    const current = await m.metadata.get(ref);
    if (current === null) throw new KeelsonError({ code: "VOLUME_NOT_FOUND", message: `replicated volume ${name} vanished` });
    const updated = change(current.value);
    if (updated === null) return;
    const won = await m.metadata.commit({
      if: [whileEpoch(name, epoch), { ref, version: current.version }],
      put: [{ ref, value: updated }],
    });
    if (won) return;
    const stale = await supersededError(m.metadata, name, epoch);
    if (stale) throw stale;
  }
  throw new KeelsonError({ code: "UNAVAILABLE", message: `volume ${name}: its record changed under every attempt to update it` });
}
