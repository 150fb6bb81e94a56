import { type WireAttachment, type WireVolume, type WireVolumeSource, WireVolumeState } from "@keelson/sdk/experimental";
import { defaultPolicy } from "../qos/policy.js";
import { volumeState } from "../replication/replica-set.js";
import type { ReplicatedVolume } from "../replication/replicated-volume.js";
import type { VolumeSource } from "../store/catalog.js";
import type { CloneSource } from "../store/pool.js";
import type { Volume } from "../store/volume.js";
import type { ControlContext } from "./context.js";
import { policyToWire } from "./qos-wire.js";
import { requireString } from "./unary.js";

/** Where a volume or snapshot named `exportName` is served over NBD (empty URIs for listeners not running). */
export function exportToWire(ctx: ControlContext, exportName: string): WireVolume["export"] {
  const tcp = ctx.nbd.tcpAddress;
  const unix = ctx.nbd.unixSocket;
  return {
    exportName,
    nbdTcpUri: tcp ? `nbd://${tcp}/${encodeURIComponent(exportName)}` : "",
    nbdUnixUri: unix ? `nbd+unix:///${encodeURIComponent(exportName)}?socket=${unix}` : "",
  };
}

function sourceToWire(source: VolumeSource | undefined): WireVolumeSource | undefined {
  if (!source) return undefined;
  if (source.kind === "snapshot") {
    return { kind: { $case: "snapshot", value: { volume: source.volumeName, name: source.snapshotName } } };
  }
  return { kind: { $case: "volume", value: source.volumeName } };
}

/** A clone source from a CreateVolume request; INVALID_ARGUMENT when one of its names is empty. */
export function sourceFromWire(source: WireVolumeSource | undefined): CloneSource | undefined {
  const kind = source?.kind;
  if (!kind) return undefined;
  if (kind.$case === "volume") return { volumeName: requireString(kind.value, "source.volume") };
  return {
    snapshot: {
      volumeName: requireString(kind.value.volume, "source.snapshot.volume"),
      name: requireString(kind.value.name, "source.snapshot.name"),
    },
  };
}

/** The wire form of a volume. */
export function volumeToWire(ctx: ControlContext, v: Volume): WireVolume {
  return {
    name: v.name,
    uid: v.record.uid,
    sizeBytes: v.sizeBytes,
    allocatedBytes: ctx.pool.layerBytes(v.head),
    state: WireVolumeState.VOLUME_STATE_HEALTHY,
    labels: { ...v.record.labels },
    createdAt: new Date(v.record.createdAtMs),
    replicas: v.record.replicas,
    export: exportToWire(ctx, v.name),
    connections: v.openHandles,
    source: sourceToWire(v.record.source),
    qosClass: v.record.qosClass ?? "",
    qos: policyToWire(v.record.qos ?? defaultPolicy()),
    qosStatus: ctx.qos.status(v.record.uid),
    epoch: v.record.epoch ?? 0,
    activityLog: v.record.activity,
    // This pool's own volume (or, to a replicaOnly caller, one node's replica): never the cluster's view.
    replicated: false,
  };
}

/** What the wire form of a replicated volume with no replica on this node is made from (its cluster record). */
export interface RemoteVolume {
  name: string;
  sizeBytes: number;
  createdAtMs: number;
  replicas: number;
  labels: Record<string, string>;
}

/** The wire form of a replicated volume with no replica on this node: no local uid, allocation or QoS state. */
export function remoteVolumeToWire(ctx: ControlContext, v: RemoteVolume): WireVolume {
  return {
    name: v.name,
    uid: "",
    sizeBytes: v.sizeBytes,
    allocatedBytes: 0,
    state: WireVolumeState.VOLUME_STATE_HEALTHY,
    labels: { ...v.labels },
    createdAt: new Date(v.createdAtMs),
    replicas: v.replicas,
    export: exportToWire(ctx, v.name),
    connections: 0,
    source: undefined,
    qosClass: "",
    qos: policyToWire(defaultPolicy()),
    qosStatus: ctx.qos.status(""),
    epoch: 0,
    activityLog: undefined,
    replicated: true,
  };
}

/** The wire form of a replicated volume attached on this node, with its replicas' states. */
export function attachmentToWire(ctx: ControlContext, rv: ReplicatedVolume): WireAttachment {
  const replicas = rv.status();
  const state = volumeState(replicas);
  return {
    volume: rv.name,
    nodeId: ctx.nodeId,
    epoch: rv.epoch,
    export: exportToWire(ctx, rv.name),
    replicas: replicas.map((r) => ({
      nodeId: r.nodeId,
      state: r.state,
      reason: r.reason,
      faultedAt: r.faultedAtMs ? new Date(r.faultedAtMs) : undefined,
      rebuiltBytes: r.rebuiltBytes,
      rebuildTotalBytes: r.rebuildTotalBytes,
      fullRebuild: r.fullRebuild,
      lastRebuild: r.lastRebuild
        ? { bytes: r.lastRebuild.bytes, durationMs: r.lastRebuild.ms, full: r.lastRebuild.full }
        : undefined,
    })),
    state,
    maxStallMs: rv.maxStallMs,
    rebuildsCompleted: rv.rebuildsCompleted,
    readOnly: rv.readOnly,
  };
}
