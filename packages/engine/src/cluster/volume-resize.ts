import { isKeelsonError, KeelsonError } from "@keelson/sdk";
import { type ClusterVolumeRecord, refs } from "../metadata/index.js";
import { messageOf } from "../util/errors.js";
import { readAttachments } from "./attachments.js";
import { getClusterVolume } from "./cluster-volumes.js";
import type { ClusterMembership, ClusterNode } from "./membership.js";
import type { VolumeAttacher } from "./volume-attacher.js";

/** Compare-and-swap attempts on the volume's record before giving up under contention. */
const MAX_RESIZE_ATTEMPTS = 8;

/**
 * Grows a replicated volume: every replica first (each on its node), then
 * the record, then the frontends, which serve the new size to connections
 * opened from then on. SHRINK_NOT_SUPPORTED below the recorded size.
 *
 * A replica whose node is down makes it UNAVAILABLE with nothing recorded:
 * a replica smaller than its record could not take writes past its end
 * (a rebuild onto it would fail), and once the node has been down long
 * enough the leader places that replica anew, at the recorded size, and the
 * resize goes through. Replicas grown by a resize cut short are harmless
 * (larger than the record); calling again finishes it. Idempotent.
 */
export async function resizeReplicatedVolume(
  m: ClusterMembership,
  attacher: VolumeAttacher,
  req: { name: string; sizeBytes: number },
): Promise<ClusterVolumeRecord> {
  const record = await growRecord(m, req.name, req.sizeBytes);
  await followEverywhere(m, attacher, record);
  return record;
}

async function growRecord(m: ClusterMembership, name: string, sizeBytes: number): Promise<ClusterVolumeRecord> {
  for (let attempt = 0; attempt < MAX_RESIZE_ATTEMPTS; attempt++) {
    const ref = refs.volume(name);
    const current = await m.metadata.get(ref);
    if (current === null) return getClusterVolume(m, name); // VOLUME_NOT_FOUND
    const record = current.value;
    if (sizeBytes < record.sizeBytes) {
      throw new KeelsonError({
        code: "SHRINK_NOT_SUPPORTED",
        message: `volume ${name} is ${record.sizeBytes} bytes; it can grow, not shrink to ${sizeBytes}`,
      });
    }
    if (sizeBytes === record.sizeBytes) return record;
    await growReplicas(m, record, sizeBytes);
    const grown: ClusterVolumeRecord = { ...record, sizeBytes };
    if (await m.metadata.commit({ if: [{ ref, version: current.version }], put: [{ ref, value: grown }] })) return grown;
  }
  throw new KeelsonError({ code: "UNAVAILABLE", message: `volume ${name}: its record changed under every attempt to resize it` });
}

/** Grows each replica on its node; UNAVAILABLE (naming them) when a replica's node is down or does not answer. */
async function growReplicas(m: ClusterMembership, record: ClusterVolumeRecord, sizeBytes: number): Promise<void> {
  const nodes = await m.nodes();
  const down = record.replicas.filter((id) => !nodes.find((n) => n.nodeId === id)?.alive);
  if (down.length > 0) {
    throw new KeelsonError({
      code: "UNAVAILABLE",
      message: `volume ${record.name} has replicas on ${down.join(", ")}, which are down: every replica must grow; retry once they are back or replaced`,
    });
  }
  const grown = await Promise.allSettled(
    record.replicas.map((id) =>
      m.peers.withPeer(nodes.find((n) => n.nodeId === id) as ClusterNode, (c) =>
        c.resizeVolume({ name: record.name, sizeBytes, replicaOnly: true }),
      ),
    ),
  );
  const failed = grown.flatMap((r, i) => (r.status === "rejected" ? [`${record.replicas[i]}: ${messageOf(r.reason)}`] : []));
  if (failed.length > 0) {
    throw new KeelsonError({
      code: "UNAVAILABLE",
      message: `volume ${record.name} not resized (nothing recorded): ${failed.join("; ")}`,
    });
  }
}

/**
 * Has the frontends serve the recorded size now: this node's, and the
 * writer's on another node (a ResizeVolume of the same size there, which
 * finds the record grown and only follows it). A node that does not answer,
 * and read-only attachments, follow the record on their next refresh.
 */
async function followEverywhere(m: ClusterMembership, attacher: VolumeAttacher, record: ClusterVolumeRecord): Promise<void> {
  await attacher.followRecord(m, record.name);
  const writer = (await readAttachments(m, record.name)).entries.find((e) => !e.readOnly);
  if (!writer || writer.nodeId === m.nodeId) return;
  const node = (await m.nodes()).find((n) => n.nodeId === writer.nodeId);
  if (!node?.alive) return;
  try {
    await m.peers.withPeer(node, (c) => c.resizeVolume({ name: record.name, sizeBytes: record.sizeBytes }));
  } catch (error) {
    if (!isKeelsonError(error, "UNAVAILABLE") && !isKeelsonError(error, "DEADLINE_EXCEEDED")) throw error;
  }
}
