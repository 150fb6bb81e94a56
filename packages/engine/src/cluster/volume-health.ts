import type { AttachmentEntry, ClusterVolumeRecord, VolumeStatusRecord } from "../metadata/index.js";
import { refs } from "../metadata/index.js";
import { readAttachments } from "./attachments.js";
import type { ClusterMembership } from "./membership.js";

/** A replicated volume's state as GetVolume and ListVolumes report it. */
export type ReplicatedVolumeState = "healthy" | "degraded" | "rebuilding" | "faulted";

const STATES: readonly string[] = ["healthy", "degraded", "rebuilding", "faulted"] satisfies ReplicatedVolumeState[];

/** What a replicated volume's state is judged from. */
export interface VolumeHealthInput {
  record: ClusterVolumeRecord;
  /** Its writable attachment, if any. */
  writer: AttachmentEntry | undefined;
  /** What a writer last published (null: nothing). */
  status: VolumeStatusRecord | null;
  /** Nodes holding their liveness lease now. */
  alive: ReadonlySet<string>;
}

/**
 * The state of a replicated volume. Attached writable: what its frontend last
 * published, which sees each replica's state and rebuilds (only the current
 * writer's: same node and epoch). Otherwise, and when the writer published
 * nothing yet, from the record: faulted when no in-sync replica's node is up,
 * degraded when some replica is out of sync or its node is down, else healthy.
 */
export function replicatedVolumeState(h: VolumeHealthInput): ReplicatedVolumeState {
  const { record, writer, status, alive } = h;
  const published =
    writer && status && status.nodeId === writer.nodeId && status.epoch === writer.epoch && STATES.includes(status.state);
  if (published) return status.state as ReplicatedVolumeState;
  const serving = record.inSync.filter((id) => alive.has(id));
  if (serving.length === 0) return "faulted";
  return serving.length < record.replicas.length ? "degraded" : "healthy";
}

/** Reads what {@link replicatedVolumeState} needs from the cluster and judges it. */
export async function readReplicatedVolumeState(
  m: ClusterMembership,
  record: ClusterVolumeRecord,
): Promise<ReplicatedVolumeState> {
  const [attachments, status, nodes] = await Promise.all([
    readAttachments(m, record.name),
    m.metadata.get(refs.status(record.name)),
    m.nodes(),
  ]);
  return replicatedVolumeState({
    record,
    writer: attachments.entries.find((e) => !e.readOnly),
    status: status?.value ?? null,
    alive: new Set(nodes.filter((n) => n.alive).map((n) => n.nodeId)),
  });
}
