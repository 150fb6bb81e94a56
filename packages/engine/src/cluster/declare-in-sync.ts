import { KeelsonError } from "@keelson/sdk";
import { refs } from "../metadata/index.js";
import { messageOf } from "../util/errors.js";
import { readAttachments } from "./attachments.js";
import { getClusterVolume } from "./cluster-volumes.js";
import { nextEpoch, whileEpoch } from "./epochs.js";
import type { ClusterMembership } from "./membership.js";

/** Deadline of asking the declared replica's node (it must answer for the decision to mean anything). */
const PEER_TIMEOUT_MS = 5_000;

/** What an operator declares: the node whose replica holds the volume from now on, and why. */
export interface InSyncDeclarationRequest {
  name: string;
  nodeId: string;
  reason: string;
}

/**
 * The operator's decision after a disaster (every in-sync replica lost for
 * good): `nodeId`'s replica becomes the only one in sync, and the others are
 * rebuilt from it at the next attach, whatever it lacks. Nothing else may
 * decide this: a frontend only ever takes replicas out of the set.
 *
 * Refused while the volume is attached (VOLUME_IN_USE: detach, with force if
 * its node is gone); UNAVAILABLE when that replica does not answer. A new
 * epoch fences every older frontend first, so none can write after the
 * decision. The decision is kept in the record (watchers see the change).
 */
export async function declareInSync(m: ClusterMembership, req: InSyncDeclarationRequest): Promise<void> {
  const { name, nodeId } = req;
  const reason = req.reason.trim();
  if (reason === "")
    throw new KeelsonError({ code: "INVALID_ARGUMENT", message: "a declaration needs a reason (for the record)" });
  const record = await getClusterVolume(m, name);
  if (!record.replicas.includes(nodeId)) {
    throw new KeelsonError({
      code: "INVALID_ARGUMENT",
      message: `volume ${name} has no replica on ${nodeId}; its replicas are on ${record.replicas.join(", ")}`,
    });
  }
  const { entries } = await readAttachments(m, name);
  if (entries.length > 0) {
    throw new KeelsonError({
      code: "VOLUME_IN_USE",
      message: `volume ${name} is attached on ${entries.map((e) => e.nodeId).join(", ")}; detach it first (with force if that node is gone)`,
    });
  }
  const node = (await m.nodes()).find((n) => n.nodeId === nodeId);
  if (!node)
    throw new KeelsonError({
      code: "UNAVAILABLE",
      message: `node ${nodeId} is not in the cluster; its replica cannot be checked`,
    });
  const epoch = await nextEpoch(m.metadata, name, m.nodeId);
  // Fenced at the new epoch: a frontend of an older one can write it no more. This call is also what
  // tells whether the node is up: its liveness key may be gone while it answers (a keepalive that came
  // late on a loaded machine; the node may even be this one).
  await m.peers
    .withPeer(node, (c) => c.fenceVolume({ name, epoch }), PEER_TIMEOUT_MS)
    .catch((error: unknown) => {
      const why = node.alive ? "" : " (its liveness key is gone too)";
      throw new KeelsonError({
        code: "UNAVAILABLE",
        message: `node ${nodeId} did not answer${why}; its replica cannot be checked: ${messageOf(error)}`,
        cause: error,
      });
    });
  const ref = refs.volume(name);
  const current = await m.metadata.get(ref);
  if (current === null) throw new KeelsonError({ code: "VOLUME_NOT_FOUND", message: `replicated volume ${name} vanished` });
  const declared = { nodeId, reason, atMs: Date.now() };
  const won = await m.metadata.commit({
    if: [whileEpoch(name, epoch), { ref, version: current.version }],
    // Every extent may differ from the others now: the next attach rebuilds them whole anyway (out of sync).
    put: [{ ref, value: { ...current.value, inSync: [nodeId], declared } }],
  });
  if (!won) {
    throw new KeelsonError({ code: "UNAVAILABLE", message: `volume ${name} changed while the declaration was recorded; retry` });
  }
}
