import { isKeelsonError } from "@keelson/sdk";
import { refs } from "../metadata/index.js";
import { REPLICA_OF_LABEL } from "../store/volume.js";
import { messageOf } from "../util/errors.js";
import type { ClusterMembership, ClusterNode } from "./membership.js";
import { PEER_CALL_TIMEOUT_MS } from "./peer-dialer.js";

/** Compare-and-swap attempts on a leftover record before the next pass tries again. */
const MAX_LEFTOVER_ATTEMPTS = 8;

/**
 * Deletes `node`'s copy of replicated volume `name` (its own pool only), when
 * there is one and it is labelled a replica of that volume: a user's volume
 * of the same name is never touched. Returns the bytes freed. Idempotent.
 */
export async function deleteCopy(
  m: ClusterMembership,
  name: string,
  node: ClusterNode,
  timeoutMs = PEER_CALL_TIMEOUT_MS,
): Promise<number> {
  return m.peers.withPeer(
    node,
    async (c) => {
      const local = await c.getVolume({ name, replicaOnly: true }).catch((e: unknown) => {
        if (isKeelsonError(e, "VOLUME_NOT_FOUND")) return null;
        throw e;
      });
      if (local?.labels[REPLICA_OF_LABEL] !== name) return 0;
      try {
        return (await c.deleteVolume({ name, force: true, replicaOnly: true })).freedBytes;
      } catch (error) {
        if (isKeelsonError(error, "VOLUME_NOT_FOUND")) return 0;
        throw error;
      }
    },
    timeoutMs,
  );
}

/**
 * The leader's pass over the copies deleted volumes left on nodes that were
 * down: each node that is back loses its copy (unless the name is a
 * replicated volume again with a replica there), and leaves the record,
 * which goes once it names no node. Returns what was removed and what not.
 */
export async function removeLeftovers(
  m: ClusterMembership,
  nodes: readonly ClusterNode[],
): Promise<{ removed: string[]; stuck: string[] }> {
  const removed: string[] = [];
  const stuck: string[] = [];
  for (const { ref, value } of await m.metadata.list("leftover")) {
    const name = ref.id;
    const live = (await m.metadata.get(refs.volume(name)))?.value;
    const done: string[] = [];
    for (const nodeId of value.nodes) {
      const node = nodes.find((n) => n.nodeId === nodeId);
      if (!node) {
        done.push(nodeId); // gone from the cluster, and its disk with it
        continue;
      }
      if (!node.alive) continue;
      try {
        if (!live?.replicas.includes(nodeId)) await deleteCopy(m, name, node);
        done.push(nodeId);
        removed.push(`${name}: copy of the deleted volume on ${nodeId}`);
      } catch (error) {
        stuck.push(`${name}: copy of the deleted volume on ${nodeId} not removed: ${messageOf(error)}`);
      }
    }
    if (done.length > 0) await forgetLeftovers(m, name, done);
  }
  return { removed, stuck };
}

/** Adds `nodes` to the copies of deleted volume `name` left to delete (a transaction's put, merged with what is there). */
export async function leftoverPut(
  m: ClusterMembership,
  name: string,
  nodes: readonly string[],
): Promise<{ ref: ReturnType<typeof refs.leftover>; value: { nodes: string[] } }> {
  const before = (await m.metadata.get(refs.leftover(name)))?.value.nodes ?? [];
  return { ref: refs.leftover(name), value: { nodes: [...new Set([...before, ...nodes])] } };
}

/** The nodes leftover copies of which were deleted have none left; the record goes when it names none. */
async function forgetLeftovers(m: ClusterMembership, name: string, done: readonly string[]): Promise<void> {
  const ref = refs.leftover(name);
  for (let attempt = 0; attempt < MAX_LEFTOVER_ATTEMPTS; attempt++) {
    const current = await m.metadata.get(ref);
    if (current === null) return;
    const nodes = current.value.nodes.filter((id) => !done.includes(id));
    const guard = [{ ref, version: current.version }];
    const won = await m.metadata.commit(
      nodes.length === 0 ? { if: guard, delete: [ref] } : { if: guard, put: [{ ref, value: { nodes } }] },
    );
    if (won) return;
  }
}
