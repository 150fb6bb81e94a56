import type * as pb from "./gen/keelson/v1/volume.js";
import { VolumeState as PbVolumeState } from "./gen/keelson/v1/volume.js";
import type { NodeInfo, Pool, Volume, VolumeState } from "./types.js";

const STATE_NAMES: Readonly<Record<PbVolumeState, VolumeState>> = {
  [PbVolumeState.VOLUME_STATE_UNSPECIFIED]: "unknown",
  [PbVolumeState.VOLUME_STATE_HEALTHY]: "healthy",
  [PbVolumeState.VOLUME_STATE_DEGRADED]: "degraded",
  [PbVolumeState.VOLUME_STATE_REBUILDING]: "rebuilding",
  [PbVolumeState.VOLUME_STATE_FAULTED]: "faulted",
};

/** Maps a wire Volume to the SDK's Volume. */
export function volumeFromWire(v: pb.Volume): Volume {
  return {
    name: v.name,
    uid: v.uid,
    sizeBytes: v.sizeBytes,
    allocatedBytes: v.allocatedBytes,
    state: STATE_NAMES[v.state] ?? "unknown",
    labels: { ...v.labels },
    createdAt: v.createdAt ?? new Date(0),
    replicas: v.replicas,
    export: {
      exportName: v.export?.exportName ?? v.name,
      nbdTcpUri: v.export?.nbdTcpUri ?? "",
      nbdUnixUri: v.export?.nbdUnixUri ?? "",
    },
    connections: v.connections,
  };
}

function poolFromWire(p: pb.Pool | undefined): Pool {
  return {
    uid: p?.uid ?? "",
    path: p?.path ?? "",
    totalBytes: p?.totalBytes ?? 0,
    allocatedBytes: p?.allocatedBytes ?? 0,
    freeBytes: p?.freeBytes ?? 0,
    extentSizeBytes: p?.extentSizeBytes ?? 0,
    volumeCount: p?.volumeCount ?? 0,
  };
}

/** Maps a wire Node to the SDK's NodeInfo. */
export function nodeFromWire(n: pb.Node): NodeInfo {
  return {
    nodeId: n.nodeId,
    version: n.version,
    pool: poolFromWire(n.pool),
    nbdTcpAddress: n.nbdTcpAddress,
    nbdUnixSocket: n.nbdUnixSocket,
  };
}

/** The wire enum value of an SDK state (used by the engine). */
export function volumeStateToWire(state: VolumeState): PbVolumeState {
  for (const [wire, name] of Object.entries(STATE_NAMES)) {
    if (name === state) return Number(wire) as PbVolumeState;
  }
  return PbVolumeState.VOLUME_STATE_UNSPECIFIED;
}
