import type * as ev from "./gen/keelson/v1/events.js";
import type * as pb from "./gen/keelson/v1/volume.js";
import { VolumeState as PbVolumeState } from "./gen/keelson/v1/volume.js";
import type {
  Attachment,
  AttachmentRecord,
  ClusterNode,
  DiskCapability,
  KeelsonEvent,
  NodeInfo,
  Pool,
  QosLimits,
  QosPolicy,
  QosStatus,
  RateLimit,
  Snapshot,
  Volume,
  VolumeExport,
  VolumeSource,
  VolumeState,
} from "./types.js";

const LIMIT_KEYS = ["readIops", "writeIops", "totalIops", "readBytesPerSec", "writeBytesPerSec"] as const;

function rateFromWire(r: pb.RateLimit | undefined): RateLimit | undefined {
  if (!r || r.rate === 0) return undefined;
  return r.burst > 0 ? { rate: r.rate, burst: r.burst } : { rate: r.rate };
}

/** Maps a wire QoS policy to the SDK's form (absent limits left out). */
export function policyFromWire(p: pb.QosPolicy | undefined): QosPolicy {
  const limits: QosLimits = {};
  for (const key of LIMIT_KEYS) {
    const r = rateFromWire(p?.limits?.[key]);
    if (r) limits[key] = r;
  }
  return {
    limits,
    reservationIops: p?.reservationIops ?? 0,
    reservationBytesPerSec: p?.reservationBytesPerSec ?? 0,
    weight: p?.weight || 1,
  };
}

/** Maps the SDK's QoS policy to the wire form; undefined stays unset. */
export function policyToWire(p: QosPolicy | undefined): pb.QosPolicy | undefined {
  if (!p) return undefined;
  const limits: pb.QosLimits = {
    readIops: undefined,
    writeIops: undefined,
    totalIops: undefined,
    readBytesPerSec: undefined,
    writeBytesPerSec: undefined,
  };
  for (const key of LIMIT_KEYS) {
    const r = p.limits?.[key];
    if (r) limits[key] = { rate: r.rate, burst: r.burst ?? 0 };
  }
  return {
    limits,
    reservationIops: p.reservationIops ?? 0,
    reservationBytesPerSec: p.reservationBytesPerSec ?? 0,
    weight: p.weight ?? 0,
  };
}

function qosStatusFromWire(s: pb.QosStatus | undefined): QosStatus {
  return {
    throttledMs: s?.throttledMs ?? 0,
    delayedIos: s?.delayedIos ?? 0,
    queuedIos: s?.queuedIos ?? 0,
    servedByReservation: s?.servedByReservation ?? 0,
    servedByWeight: s?.servedByWeight ?? 0,
  };
}

function capabilityFromWire(c: pb.DiskCapability | undefined): DiskCapability | undefined {
  if (!c) return undefined;
  const source = c.source === "calibrated" || c.source === "operator" ? c.source : "";
  return { iops: c.iops, bytesPerSec: c.bytesPerSec, source, measuredAt: c.measuredAt ?? new Date(0), headroom: c.headroom };
}

const STATE_NAMES: Readonly<Record<PbVolumeState, VolumeState>> = {
  [PbVolumeState.VOLUME_STATE_UNSPECIFIED]: "unknown",
  [PbVolumeState.VOLUME_STATE_HEALTHY]: "healthy",
  [PbVolumeState.VOLUME_STATE_DEGRADED]: "degraded",
  [PbVolumeState.VOLUME_STATE_REBUILDING]: "rebuilding",
  [PbVolumeState.VOLUME_STATE_FAULTED]: "faulted",
};

function exportFromWire(e: pb.VolumeExport | undefined, name: string): VolumeExport {
  return { exportName: e?.exportName ?? name, nbdTcpUri: e?.nbdTcpUri ?? "", nbdUnixUri: e?.nbdUnixUri ?? "" };
}

/** Maps a wire VolumeSource to the SDK's form; undefined when unset. */
export function sourceFromWire(s: pb.VolumeSource | undefined): VolumeSource | undefined {
  const kind = s?.kind;
  if (!kind) return undefined;
  if (kind.$case === "snapshot") return { snapshot: { volume: kind.value.volume, name: kind.value.name } };
  return { volume: kind.value };
}

/** Maps the SDK's VolumeSource to the wire form. */
export function sourceToWire(s: VolumeSource | undefined): pb.VolumeSource | undefined {
  if (!s) return undefined;
  if ("snapshot" in s) return { kind: { $case: "snapshot", value: { volume: s.snapshot.volume, name: s.snapshot.name } } };
  return { kind: { $case: "volume", value: s.volume } };
}

/** Maps a wire Snapshot to the SDK's Snapshot. */
export function snapshotFromWire(s: pb.Snapshot): Snapshot {
  return {
    name: s.name,
    uid: s.uid,
    volume: s.volume,
    volumeUid: s.volumeUid,
    sizeBytes: s.sizeBytes,
    allocatedBytes: s.allocatedBytes,
    createdAt: s.createdAt ?? new Date(0),
    labels: { ...s.labels },
    parentSnapshot: s.parentSnapshot,
    export: exportFromWire(s.export, `${s.volume}@${s.name}`),
    connections: s.connections,
    holders: [...s.holders],
  };
}

/** Maps a wire Volume to the SDK's Volume. */
export function volumeFromWire(v: pb.Volume): Volume {
  const source = sourceFromWire(v.source);
  return {
    name: v.name,
    uid: v.uid,
    sizeBytes: v.sizeBytes,
    allocatedBytes: v.allocatedBytes,
    state: STATE_NAMES[v.state] ?? "unknown",
    labels: { ...v.labels },
    createdAt: v.createdAt ?? new Date(0),
    replicas: v.replicas,
    export: exportFromWire(v.export, v.name),
    connections: v.connections,
    ...(source ? { source } : {}),
    qosClass: v.qosClass,
    qos: policyFromWire(v.qos),
    qosStatus: qosStatusFromWire(v.qosStatus),
    epoch: v.epoch,
    ...(v.activityLog ? { activityLog: { ...v.activityLog, extents: [...v.activityLog.extents] } } : {}),
    // An engine from before the field says nothing: more than one replica is a cluster volume all the same.
    replicated: v.replicated || v.replicas > 1,
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
    snapshotCount: p?.snapshotCount ?? 0,
    ...(p?.capability ? { capability: capabilityFromWire(p.capability) } : {}),
    reservedIops: p?.reservedIops ?? 0,
    reservedBytesPerSec: p?.reservedBytesPerSec ?? 0,
    provisionedBytes: p?.provisionedBytes ?? 0,
    overcommitPercent: p?.overcommitPercent ?? 0,
    provisionLimitBytes: p?.provisionLimitBytes ?? 0,
    directIo: p?.directIo ?? false,
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
    qosClasses: Object.fromEntries(Object.entries(n.qosClasses).map(([k, v]) => [k, policyFromWire(v)])),
    zone: n.zone,
    leader: n.leader,
    etcdEndpoints: n.etcdEndpoints,
    ioEngine: n.ioEngine === "io_uring" || n.ioEngine === "threadpool" ? n.ioEngine : "unknown",
    ioEngineNote: n.ioEngineNote,
  };
}

/** Maps a wire ClusterNode to the SDK's form. */
export function clusterNodeFromWire(n: pb.ClusterNode): ClusterNode {
  return {
    nodeId: n.nodeId,
    controlAddress: n.controlAddress,
    nbdAddress: n.nbdAddress,
    storageAddress: n.storageAddress,
    zone: n.zone,
    state: n.state === "up" || n.state === "down" ? n.state : "unknown",
    stateSince: n.stateSince ?? new Date(0),
    alive: n.alive,
    leader: n.leader,
    ...(n.disk ? { disk: { ...n.disk, updatedAt: n.disk.updatedAt ?? new Date(0) } } : {}),
  };
}

/** The wire enum value of an SDK state (used by the engine). */
export function volumeStateToWire(state: VolumeState): PbVolumeState {
  for (const [wire, name] of Object.entries(STATE_NAMES)) {
    if (name === state) return Number(wire) as PbVolumeState;
  }
  return PbVolumeState.VOLUME_STATE_UNSPECIFIED;
}

/** Maps a wire Attachment to the SDK's form. */
export function attachmentFromWire(a: pb.Attachment): Attachment {
  const states = ["healthy", "degraded", "rebuilding", "faulted"] as const;
  const state = states.find((s) => s === a.state) ?? "faulted";
  return {
    volume: a.volume,
    nodeId: a.nodeId,
    epoch: a.epoch,
    export: exportFromWire(a.export, a.volume),
    replicas: a.replicas.map((r) => ({
      nodeId: r.nodeId,
      state: r.state === "healthy" || r.state === "rebuilding" ? r.state : "faulted",
      reason: r.reason,
      ...(r.faultedAt ? { faultedAt: r.faultedAt } : {}),
      rebuiltBytes: r.rebuiltBytes,
      rebuildTotalBytes: r.rebuildTotalBytes,
      fullRebuild: r.fullRebuild,
      ...(r.lastRebuild
        ? { lastRebuild: { bytes: r.lastRebuild.bytes, durationMs: r.lastRebuild.durationMs, full: r.lastRebuild.full } }
        : {}),
    })),
    state,
    maxStallMs: a.maxStallMs,
    rebuildsCompleted: a.rebuildsCompleted,
    readOnly: a.readOnly,
  };
}

export function attachmentRecordFromWire(a: pb.AttachmentRecord): AttachmentRecord {
  return {
    nodeId: a.nodeId,
    readOnly: a.readOnly,
    epoch: a.epoch,
    ...(a.attachedAt ? { attachedAt: a.attachedAt } : {}),
  };
}

const VOLUME_STATES = ["healthy", "degraded", "rebuilding", "faulted", "detached"] as const;

/** Maps a wire event to the SDK's; null for the stream's opening Watching marker. */
export function eventFromWire(e: ev.Event): KeelsonEvent | null {
  const base = { cursor: { revision: e.revision, index: e.index }, at: e.at ?? new Date(0) };
  const k = e.kind;
  switch (k?.$case) {
    case "volume": {
      const { declared, ...v } = k.value;
      return {
        ...base,
        kind: "volume",
        ...v,
        replicas: [...v.replicas],
        inSync: [...v.inSync],
        ...(declared ? { declared: { nodeId: declared.nodeId, reason: declared.reason, at: declared.at ?? new Date(0) } } : {}),
      };
    }
    case "attachments":
      return { ...base, kind: "attachments", volume: k.value.volume, attachments: k.value.attachments.map((a) => ({ ...a })) };
    case "snapshot":
      return { ...base, kind: "snapshot", ...k.value, holders: [...k.value.holders] };
    case "node": {
      const n = k.value;
      return {
        ...base,
        kind: "node",
        nodeId: n.nodeId,
        ...(n.state === "up" || n.state === "down" ? { state: n.state } : {}),
        ...(n.aliveChanged ? { alive: n.alive } : {}),
      };
    }
    case "status": {
      const s = k.value;
      return {
        ...base,
        kind: "status",
        volume: s.volume,
        nodeId: s.nodeId,
        epoch: s.epoch,
        state: VOLUME_STATES.find((x) => x === s.state) ?? "faulted",
        replicas: s.replicas.map((r) => ({
          nodeId: r.nodeId,
          state: r.state === "healthy" || r.state === "rebuilding" ? r.state : "faulted",
          rebuiltBytes: r.rebuiltBytes,
          rebuildTotalBytes: r.rebuildTotalBytes,
        })),
      };
    }
    case "spaceAlert": {
      const { raised, ...alert } = k.value;
      return { ...base, kind: "spaceAlert", ...alert, state: raised ? "raised" : "cleared" };
    }
    default:
      return null;
  }
}

/**
 * The extent numbers set in a bitmap (least significant bit first), never
 * past `sizeBytes`: a peer's malformed answer cannot name more extents than
 * the volume has.
 */
export function extentsFromBitmap(bitmap: Uint8Array, sizeBytes: number, extentBytes: number): number[] {
  if (extentBytes <= 0) return [];
  const count = Math.min(Math.ceil(sizeBytes / extentBytes), bitmap.length * 8);
  const out: number[] = [];
  for (let i = 0; i < count; i++) if (((bitmap[i >> 3] as number) >> (i & 7)) & 1) out.push(i);
  return out;
}

/** The bitmap of `extents` (numbers below `count`), least significant bit first. */
export function extentsToBitmap(extents: readonly number[], count: number): Buffer {
  const bitmap = Buffer.alloc(Math.ceil(count / 8));
  for (const i of extents) if (i >= 0 && i < count) bitmap[i >> 3] = (bitmap[i >> 3] as number) | (1 << (i & 7));
  return bitmap;
}
