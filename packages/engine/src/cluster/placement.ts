import { KeelsonError } from "@keelson/sdk";
import { formatBytes } from "../util/size.js";

/** What a node's pool has promised (the sum of its volume sizes) against its over-commit limit. */
export interface CandidateProvisioning {
  provisionedBytes: number;
  /** Most the pool may promise: its data capacity x `overcommitPercent` / 100. */
  limitBytes: number;
  overcommitPercent: number;
}

/** A node as placement sees it. */
export interface PlacementCandidate {
  nodeId: string;
  zone: string;
  alive: boolean;
  /** Free bytes on the node's pool. */
  freeBytes: number;
  /** Its pool's promises and limit; absent when the node did not report them (it still refuses a create past its limit). */
  provisioning?: CandidateProvisioning;
  /** Why the node cannot take a replica now when that is known (it did not answer, …); shown in NO_SPACE. */
  problem?: string;
}

/** What is being placed. */
export interface PlacementRequest {
  replicas: number;
  /** Size of each replica: a node qualifies only while its pool can promise this much more. */
  sizeBytes: number;
  /** Put a replica here first when it qualifies (data locality: reads stay local). */
  preferredNodeId?: string;
}

function overLimit(c: PlacementCandidate, sizeBytes: number): boolean {
  return c.provisioning !== undefined && c.provisioning.provisionedBytes + sizeBytes > c.provisioning.limitBytes;
}

/** Why `c` cannot take a replica of `sizeBytes`, or null when it can. */
export function whyNotQualified(c: PlacementCandidate, sizeBytes: number): string | null {
  if (!c.alive) return "no liveness lease";
  if (c.problem !== undefined) return c.problem;
  if (c.freeBytes <= 0) return "pool full";
  if (c.provisioning && overLimit(c, sizeBytes)) {
    const p = c.provisioning;
    return `over-commit limit: ${formatBytes(p.provisionedBytes)} provisioned + ${formatBytes(sizeBytes)} asked > ${formatBytes(p.limitBytes)} (${p.overcommitPercent}% of its data capacity)`;
  }
  return null;
}

/** The refusal when fewer than `replicas` candidates qualify. */
function tooFew(
  candidates: readonly PlacementCandidate[],
  usable: readonly PlacementCandidate[],
  r: PlacementRequest,
): KeelsonError {
  const leftOut = candidates.filter((c) => !usable.includes(c));
  // Nodes that are down or did not answer may be back in a moment; full ones will not.
  const transient = leftOut.filter((c) => !c.alive || c.problem !== undefined).length;
  const limited = leftOut.filter((c) => c.alive && c.problem === undefined && c.freeBytes > 0).length;
  const code =
    usable.length + transient >= r.replicas
      ? "UNAVAILABLE"
      : usable.length + transient + limited >= r.replicas
        ? "LIMIT_EXCEEDED"
        : "NO_SPACE";
  const why = leftOut.map((c) => `${c.nodeId}: ${whyNotQualified(c, r.sizeBytes)}`);
  return new KeelsonError({
    code,
    message: `${r.replicas} replicas of ${formatBytes(r.sizeBytes)} need ${r.replicas} distinct live nodes with free space under their over-commit limit; ${usable.length} qualify (${usable.map((c) => c.nodeId).join(", ") || "none"})${why.length ? `; left out: ${why.join("; ")}` : ""}`,
  });
}

/**
 * Chooses `replicas` distinct live nodes for a volume: the preferred node
 * first when it can hold a replica (data locality: reads stay local), then
 * one node per zone not yet used before doubling up in a zone, most free
 * space first. Volumes are thin, so a node qualifies while it has any free
 * space and its pool can promise `sizeBytes` more under its over-commit limit.
 * When fewer qualify than replicas are wanted: UNAVAILABLE (retryable) if
 * nodes that are down or did not answer would make up the number, else
 * LIMIT_EXCEEDED if nodes at their over-commit limit would, else NO_SPACE.
 */
export function placeReplicas(candidates: readonly PlacementCandidate[], r: PlacementRequest): PlacementCandidate[] {
  const usable = candidates.filter((c) => whyNotQualified(c, r.sizeBytes) === null);
  if (usable.length < r.replicas) throw tooFew(candidates, usable, r);
  const byFree = [...usable].sort((a, b) => b.freeBytes - a.freeBytes || (a.nodeId < b.nodeId ? -1 : 1));
  const chosen: PlacementCandidate[] = [];
  const preferred = byFree.find((c) => c.nodeId === r.preferredNodeId);
  if (preferred) chosen.push(preferred);
  while (chosen.length < r.replicas) {
    const zones = new Set(chosen.map((c) => c.zone));
    const next = byFree.find((c) => !chosen.includes(c) && !zones.has(c.zone)) ?? byFree.find((c) => !chosen.includes(c));
    chosen.push(next as PlacementCandidate);
  }
  return chosen;
}
