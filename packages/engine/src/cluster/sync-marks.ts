import { KeelsonError } from "@keelson/sdk";
import { type ActivityRecord, type ClusterVolumeRecord, minInSyncOf, refs } from "../metadata/index.js";
import { ACTIVITY_EXTENT_BYTES, type ActivityExtents } from "../replication/activity-log.js";
import { RegionMap } from "../replication/region-map.js";
import type { ResyncPlan } from "../replication/resync.js";
import { supersededError, whileEpoch } from "./epochs.js";
import type { ClusterMembership } from "./membership.js";

/**
 * What the last frontend's activity log says may differ between in-sync
 * replicas: its extents as byte ranges, or "all" when there is no log (an
 * attachment that never wrote one) or it says so.
 */
export async function loadActivityLog(m: ClusterMembership, name: string): Promise<ResyncPlan> {
  const record = (await m.metadata.get(refs.activity(name)))?.value;
  if (record === undefined) return "all";
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

/**
 * Saves the activity log of the frontend at `epoch`, only while that is the
 * volume's current epoch. `latest` says whether this is still the newest
 * save the frontend started: a save abandoned at its deadline (etcd slow)
 * may still be running, and must never put an older log over a newer one.
 */
export async function saveActivityLog(
  m: ClusterMembership,
  name: string,
  epoch: number,
  sizeBytes: number,
  extents: ActivityExtents,
  latest: () => boolean = () => true,
): Promise<void> {
  const record: ActivityRecord = { epoch, extentBytes: ACTIVITY_EXTENT_BYTES };
  if (extents === "all") record.all = true;
  else {
    // Sized to every extent, not only to the size at attach: the volume may have grown since.
    const coveredBytes = extents.reduce((most, e) => Math.max(most, (e + 1) * ACTIVITY_EXTENT_BYTES), sizeBytes);
    const map = new RegionMap(coveredBytes, ACTIVITY_EXTENT_BYTES);
    for (const e of extents) map.add(e);
    record.bitmap = Buffer.from(map.toBytes()).toString("base64");
  }
  // A compare-and-swap on the log as read just before, by the newest save only: an older one that
  // runs late either finds a newer save started (and stops) or loses the compare to what it wrote.
  const ref = refs.activity(name);
  for (let attempt = 0; attempt < MAX_SYNC_UPDATE_ATTEMPTS; attempt++) {
    const current = await m.metadata.get(ref);
    if (!latest()) throw supersededSave(name);
    const saved = await m.metadata.commit({
      if: [whileEpoch(name, epoch), { ref, version: current?.version ?? null }],
      put: [{ ref, value: record }],
    });
    if (saved) return;
    const stale = await supersededError(m.metadata, name, epoch);
    if (stale) throw stale;
    if (!latest()) throw supersededSave(name);
  }
  throw new KeelsonError({
    code: "UNAVAILABLE",
    message: `volume ${name}: the activity log changed under every attempt to save it; retry`,
  });
}

function supersededSave(name: string): KeelsonError {
  return new KeelsonError({ code: "UNAVAILABLE", message: `volume ${name}: a newer save of the activity log replaced this one` });
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
