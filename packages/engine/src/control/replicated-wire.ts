import type { WireVolume } from "@keelson/sdk/experimental";
import { WireVolumeState } from "@keelson/sdk/experimental";
import type { ClusterVolumeRecord } from "../cluster/cluster-volumes.js";
import type { ClusterMembership } from "../cluster/membership.js";
import { policyOf } from "../cluster/replicated-qos.js";
import { type ReplicatedVolumeState, readReplicatedVolumeState } from "../cluster/volume-health.js";
import { volumeState } from "../replication/replica-set.js";
import { replicatedQosKey } from "../target/volume-target.js";
import type { ControlContext } from "./context.js";
import { policyToWire } from "./qos-wire.js";
import { remoteVolumeToWire, volumeToWire } from "./volume-wire.js";

const WIRE_STATE: Record<ReplicatedVolumeState, WireVolumeState> = {
  healthy: WireVolumeState.VOLUME_STATE_HEALTHY,
  degraded: WireVolumeState.VOLUME_STATE_DEGRADED,
  rebuilding: WireVolumeState.VOLUME_STATE_REBUILDING,
  faulted: WireVolumeState.VOLUME_STATE_FAULTED,
};

/**
 * A replicated volume as this node reports it. Size, replicas and QoS are
 * the record's. The state is the frontend's here when it is attached
 * writable here, else what the cluster says (see replicatedVolumeState).
 * allocatedBytes is one replica's: this node's when it holds one (replicas
 * hold the same data, so one stands for all, without a call to a peer),
 * else the first live holder's; 0 when none answers.
 */
export async function replicatedVolumeToWire(
  ctx: ControlContext,
  m: ClusterMembership,
  record: ClusterVolumeRecord,
  labels: Record<string, string> = {},
): Promise<WireVolume> {
  const state = WIRE_STATE[await stateOf(ctx, m, record)];
  const local = ctx.pool.findVolume(record.name);
  const shared = {
    sizeBytes: record.sizeBytes,
    state,
    replicas: record.replicas.length,
    qosClass: record.qosClass ?? "",
    qos: policyToWire(policyOf(record)),
    qosStatus: ctx.qos.status(replicatedQosKey(record.name)),
    // One replica's log is no fact about the volume: GetVolume with replica_only shows it.
    activityLog: undefined,
    replicated: true,
  };
  if (local) return { ...volumeToWire(ctx, local), ...shared };
  const remote = remoteVolumeToWire(ctx, { ...record, replicas: record.replicas.length, labels });
  return { ...remote, ...shared, allocatedBytes: await allocatedOnHolder(m, record) };
}

async function stateOf(ctx: ControlContext, m: ClusterMembership, record: ClusterVolumeRecord): Promise<ReplicatedVolumeState> {
  const here = ctx.frontends.get(record.name);
  if (here?.serving && !here.readOnly) return volumeState(here.status());
  return readReplicatedVolumeState(m, record);
}

/** Longest one holder may take to say what its replica allocates. */
const HOLDER_TIMEOUT_MS = 2_000;

/** What the first live replica holder reports its replica allocates; 0 when none answers. */
async function allocatedOnHolder(m: ClusterMembership, record: ClusterVolumeRecord): Promise<number> {
  const nodes = await m.nodes();
  for (const id of record.replicas) {
    const node = nodes.find((n) => n.nodeId === id);
    if (!node?.alive || id === m.nodeId) continue;
    try {
      const v = await m.peers.withPeer(node, (c) => c.getVolume({ name: record.name, replicaOnly: true }), HOLDER_TIMEOUT_MS);
      return v.allocatedBytes;
    } catch {
      // The next holder may answer.
    }
  }
  return 0;
}
