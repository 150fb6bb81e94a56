import { KeelsonError } from "@keelson/sdk";

/** A node as placement sees it. */
export interface PlacementCandidate {
  nodeId: string;
  zone: string;
  alive: boolean;
  /** Free bytes on the node's pool. */
  freeBytes: number;
  /** Why the node cannot take a replica now when that is known (it did not answer, …); shown in NO_SPACE. */
  problem?: string;
}

function whyLeftOut(c: PlacementCandidate): string {
  if (!c.alive) return "no liveness lease";
  return c.problem ?? "pool full";
}

/**
 * Chooses `replicas` distinct live nodes for a volume: the preferred node
 * first when it can hold a replica (data locality: reads stay local), then
 * one node per zone not yet used before doubling up in a zone, most free
 * space first. Volumes are thin, so a node qualifies while it has any free
 * space. When fewer qualify than replicas are wanted: UNAVAILABLE (retryable)
 * if nodes that are down or did not answer would make up the number, else NO_SPACE.
 */
export function placeReplicas(
  candidates: readonly PlacementCandidate[],
  replicas: number,
  preferredNodeId?: string,
): PlacementCandidate[] {
  const usable = candidates.filter((c) => c.alive && c.freeBytes > 0);
  if (usable.length < replicas) {
    const leftOut = candidates.filter((c) => !usable.includes(c));
    // Nodes that are down or did not answer may be back in a moment; full ones will not.
    const transient = leftOut.filter((c) => !c.alive || c.problem !== undefined);
    const why = leftOut.map((c) => `${c.nodeId}: ${whyLeftOut(c)}`);
    throw new KeelsonError({
      code: usable.length + transient.length >= replicas ? "UNAVAILABLE" : "NO_SPACE",
      message: `${replicas} replicas need ${replicas} distinct live nodes with free space; ${usable.length} qualify (${usable.map((c) => c.nodeId).join(", ") || "none"})${why.length ? `; left out: ${why.join("; ")}` : ""}`,
    });
  }
  const byFree = [...usable].sort((a, b) => b.freeBytes - a.freeBytes || (a.nodeId < b.nodeId ? -1 : 1));
  const chosen: PlacementCandidate[] = [];
  const preferred = byFree.find((c) => c.nodeId === preferredNodeId);
  if (preferred) chosen.push(preferred);
  while (chosen.length < replicas) {
    const zones = new Set(chosen.map((c) => c.zone));
    const next = byFree.find((c) => !chosen.includes(c) && !zones.has(c.zone)) ?? byFree.find((c) => !chosen.includes(c));
    chosen.push(next as PlacementCandidate);
  }
  return chosen;
}
