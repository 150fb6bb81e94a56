import { KeelsonError } from "@keelson/sdk";
import { refs } from "../metadata/index.js";
import { messageOf } from "../util/errors.js";
import { readAttachments } from "./attachments.js";
import { getClusterVolume } from "./cluster-volumes.js";
import type { ClusterMembership } from "./membership.js";
import { deleteCopy, leftoverPut } from "./stale-copies.js";
import type { VolumeAttacher } from "./volume-attacher.js";

/** Rounds of "delete the copies, then the record" when the record changes under the delete (a replica replaced meanwhile). */
const MAX_DELETE_ROUNDS = 4;

/**
 * Deadline of the delete on a node whose liveness key is gone: a node that is down costs the delete this
 * long, and one whose keepalive only came late (a loaded machine) answers well within it and loses its
 * copy now, instead of keeping it until the leader's pass finds it alive again.
 */
const NOT_ALIVE_DELETE_TIMEOUT_MS = 1_000;

/** What a replicated delete did. */
export interface ReplicatedDeleteResult {
  /** Bytes the replicas deleted now returned to their pools, together. */
  freedBytes: number;
  /** Nodes whose copy is left for the leader to delete once they answer (down, or the call failed). */
  leftOn: string[];
  /** Why the copies on nodes that were up were left. */
  why: string[];
}

/**
 * Deletes a replicated volume: VOLUME_IN_USE while it is attached anywhere,
 * unless `force`, when every frontend is fenced at a new epoch and then
 * detached. Then each replica (and each stale copy the record still names)
 * is deleted on its node, and the volume's records go in one transaction
 * that also records the copies on nodes that did not answer, for the
 * leader to delete once they are back. The epoch record stays: a volume
 * created again under the name continues above it, so a frontend of this
 * one still running somewhere never matches the new volume's epoch.
 * VOLUME_NOT_FOUND when there is no such volume; a delete cut short leaves
 * the record, and calling again finishes it.
 */
export async function deleteReplicatedVolume(
  m: ClusterMembership,
  attacher: VolumeAttacher,
  req: { name: string; force: boolean },
): Promise<ReplicatedDeleteResult> {
  const { name } = req;
  await getClusterVolume(m, name);
  const { entries } = await readAttachments(m, name);
  if (entries.length > 0 && !req.force) {
    throw new KeelsonError({
      code: "VOLUME_IN_USE",
      message: `volume ${name} is attached on ${entries.map((e) => `${e.nodeId}${e.readOnly ? " (read-only)" : ""}`).join(", ")}: detach it, or delete with force`,
    });
  }
  await attacher.fenceAndDetachAll(m, name);
  let freedBytes = 0;
  const deleted = new Set<string>();
  for (let round = 0; round < MAX_DELETE_ROUNDS; round++) {
    const current = await m.metadata.get(refs.volume(name));
    if (current === null) return { freedBytes, leftOn: [], why: [] }; // a concurrent delete finished it
    const record = current.value;
    const nodes = await m.nodes();
    const holders = [...new Set([...record.replicas, ...(record.retired ?? [])])].filter((id) => !deleted.has(id));
    const leftOn: string[] = [];
    const why: string[] = [];
    await Promise.all(
      holders.map(async (id) => {
        const node = nodes.find((n) => n.nodeId === id);
        if (!node) return; // gone from the cluster, its disk with it
        try {
          // Read after the await: `freedBytes += await …` would add to the value read before it.
          const freed = await deleteCopy(m, name, node, node.alive ? undefined : NOT_ALIVE_DELETE_TIMEOUT_MS);
          freedBytes += freed;
          deleted.add(id);
        } catch (error) {
          leftOn.push(id);
          why.push(`${id}: ${messageOf(error)}`);
        }
      }),
    );
    const gone = [refs.volume(name), refs.attachments(name), refs.status(name)];
    const won = await m.metadata.commit({
      if: [{ ref: refs.volume(name), version: current.version }],
      delete: gone,
      ...(leftOn.length > 0 ? { put: [await leftoverPut(m, name, leftOn)] } : {}),
    });
    if (won) return { freedBytes, leftOn, why };
  }
  throw new KeelsonError({
    code: "UNAVAILABLE",
    message: `volume ${name}: its record changed under every attempt to delete it; delete it again`,
  });
}
