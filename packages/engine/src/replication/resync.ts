import { ACTIVITY_EXTENT_BYTES, type ActivityExtents } from "./activity-log.js";
import { RegionMap, regionsOf } from "./region-map.js";
import { type Replica, type ReplicaSet, setRebuilding } from "./replica-set.js";

/**
 * What a new attachment must make equal across the in-sync replicas before
 * it reads from more than one: the ranges the previous frontend's activity
 * log held (writes it may have left on some replicas only), or "all" when
 * that is not known.
 */
export type ResyncPlan = readonly { offset: number; length: number }[] | "all";

/**
 * Picks the source (the local replica when it is up) and marks every other
 * in-sync replica for a resync of the planned ranges (a healthy one stops
 * serving reads until it is done); returns the extents the activity log must
 * keep until that is done (null when there is a single in-sync replica, or
 * nothing planned).
 */
export function planResync(
  replicas: ReplicaSet,
  localNodeId: string,
  sizeBytes: number,
  plan: ResyncPlan,
): ActivityExtents | null {
  const inSync = replicas.list.filter((r) => r.inRecord);
  const up = inSync.filter((r) => r.is.state === "healthy");
  if (inSync.length < 2 || up.length === 0) return null;
  const source = up.find((r) => r.nodeId === localNodeId) ?? (up[0] as Replica);
  let missing: RegionMap | null = null;
  const extents = new Set<number>();
  if (plan !== "all") {
    missing = new RegionMap(sizeBytes);
    for (const { offset, length } of plan) {
      missing.addRange(offset, length);
      const { first, last } = regionsOf(offset, length, ACTIVITY_EXTENT_BYTES);
      for (let e = first; e <= last; e++) extents.add(e);
    }
    if (missing.count === 0) return null;
  }
  for (const r of inSync) {
    if (r === source) continue;
    r.resyncing = true;
    const lacks = missing === null ? null : RegionMap.copy(missing);
    if (r.is.state === "healthy") {
      const reason = `resync from ${source.nodeId}: the previous frontend may have left writes on some replicas only`;
      setRebuilding(r, r.is.client, { reason, faultedAtMs: Date.now(), missing: lacks }, 0);
    } else if (r.is.state === "faulted") {
      r.is.missing = lacks;
    }
  }
  return plan === "all" ? "all" : [...extents].sort((a, b) => a - b);
}
