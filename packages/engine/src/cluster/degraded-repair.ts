import { KeelsonError } from "@keelson/sdk";
import { type ClusterVolumeRecord, refs } from "../metadata/index.js";
import { REPLICA_OF_LABEL } from "../store/volume.js";
import { messageOf } from "../util/errors.js";
import { deleteUnheldSnapshots, dropHolder } from "./cluster-snapshots.js";
import { peerPoolSpace } from "./cluster-volumes.js";
import type { IdleVolumeRepairer } from "./idle-repair.js";
import type { ClusterMembership, ClusterNode } from "./membership.js";
import { whyNotQualified } from "./placement.js";
import { deleteCopy, removeLeftovers } from "./stale-copies.js";

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
  const records = (await m.metadata.list("volume")).map((r) => r.value);
  const now = Date.now();
  const leftovers = await removeLeftovers(m, nodes);
  report.removed.push(...leftovers.removed);
  report.stuck.push(...leftovers.stuck);
  for (const record of records) {
    for (const nodeId of record.retired ?? []) {
      const node = nodes.find((n) => n.nodeId === nodeId);
      if (!node?.alive) continue;
      try {
        await removeRetiredCopy(m, record.name, node);
        report.removed.push(`${record.name}: stale copy on ${nodeId}`);
      } catch (error) {
        report.stuck.push(`${record.name}: stale copy on ${nodeId} not removed: ${messageOf(error)}`);
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
        report.stuck.push(`${record.name}: replica on ${nodeId} not replaced: ${messageOf(error)}`);
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
    spares.map(async (n) => ({ nodeId: n.nodeId, zone: n.zone, alive: true, ...(await peerPoolSpace(m.peers, n)) })),
  );
  const usedZones = new Set(
    record.replicas.filter((id) => id !== lostNodeId).map((id) => nodes.find((n) => n.nodeId === id)?.zone),
  );
  const usable = candidates
    .filter((c) => whyNotQualified(c, record.sizeBytes) === null)
    .sort((a, b) => b.freeBytes - a.freeBytes);
  const pick = usable.find((c) => !usedZones.has(c.zone)) ?? usable[0];
  if (!pick) {
    const why = candidates.map((c) => `${c.nodeId}: ${whyNotQualified(c, record.sizeBytes)}`).join("; ");
    throw new KeelsonError({ code: "NO_SPACE", message: `no live node without a replica can take one${why ? ` (${why})` : ""}` });
  }
  const node = nodes.find((n) => n.nodeId === pick.nodeId) as ClusterNode;
  await m.peers.withPeer(node, (c) =>
    c.createVolume({ name: record.name, sizeBytes: record.sizeBytes, labels: { [REPLICA_OF_LABEL]: record.name } }),
  );
  const ref = refs.volume(record.name);
  const current = await m.metadata.get(ref);
  if (current === null) throw new KeelsonError({ code: "VOLUME_NOT_FOUND", message: `volume ${record.name} was deleted` });
  const latest = current.value;
  if (!latest.replicas.includes(lostNodeId) || latest.inSync.includes(lostNodeId)) {
    throw new KeelsonError({ code: "UNAVAILABLE", message: `the record of ${record.name} changed; next pass` });
  }
  const updated: ClusterVolumeRecord = {
    ...latest,
    replicas: latest.replicas.map((id) => (id === lostNodeId ? pick.nodeId : id)),
    retired: [...(latest.retired ?? []).filter((id) => id !== pick.nodeId), lostNodeId],
  };
  const won = await m.metadata.commit({ if: [{ ref, version: current.version }], put: [{ ref, value: updated }] });
  if (!won) throw new KeelsonError({ code: "UNAVAILABLE", message: `the record of ${record.name} changed; next pass` });
  // Its snapshot copies are no replica's now: the new replica's rebuild copies the chain and becomes their holder.
  await dropHolder(m, record.name, lostNodeId).catch(() => undefined);
  return pick.nodeId;
}

/**
 * Deletes the stale local copy a replaced replica left on `node` (only a
 * volume marked as a replica of `name`), then drops the node from the
 * record's retired list. A node the volume was placed on again keeps its copy.
 */
async function removeRetiredCopy(m: ClusterMembership, name: string, node: ClusterNode): Promise<void> {
  const ref = refs.volume(name);
  const current = await m.metadata.get(ref);
  if (current === null) return;
  const record = current.value;
  if (!record.replicas.includes(node.nodeId)) {
    await deleteUnheldSnapshots(m, name, node);
    await deleteCopy(m, name, node);
  }
  const updated = { ...record, retired: (record.retired ?? []).filter((id) => id !== node.nodeId) };
  await m.metadata.commit({ if: [{ ref, version: current.version }], put: [{ ref, value: updated }] });
}
