import { type ServerUnaryCall, type ServiceError, type sendUnaryData, status } from "@grpc/grpc-js";
import { KeelsonError, toServiceError } from "@keelson/sdk";
import {
  type NodeServiceServer,
  type SnapshotServiceServer,
  type VolumeServiceServer,
  type WireDeleteSnapshotResponse,
  type WireDeleteVolumeResponse,
  type WireListSnapshotsResponse,
  type WireListVolumesResponse,
  type WireNode,
  type WireSnapshot,
  type WireVolume,
  type WireVolumeSource,
  WireVolumeState,
} from "@keelson/sdk/experimental";
import type { NbdServer } from "../nbd/server.js";
import type { VolumeSource } from "../store/catalog.js";
import type { CloneSource, Pool } from "../store/pool.js";
import type { Snapshot, Volume } from "../store/volume.js";
import type { Logger } from "../util/log.js";

/** What the control API serves from. */
export interface ControlContext {
  pool: Pool;
  nbd: NbdServer;
  nodeId: string;
  version: string;
  log: Logger;
}

function toWireError(error: unknown): Partial<ServiceError> {
  if (error instanceof KeelsonError) return toServiceError(error);
  return { code: status.INTERNAL, details: error instanceof Error ? error.message : String(error) };
}

/** Adapts an async handler to grpc-js, mapping KeelsonError to status + keelson-code at this edge only. */
function unary<Req, Res>(ctx: ControlContext, method: string, fn: (req: Req) => Promise<Res>) {
  return (call: ServerUnaryCall<Req, Res>, callback: sendUnaryData<Res>): void => {
    fn(call.request).then(
      (res) => callback(null, res),
      (error: unknown) => {
        const wire = toWireError(error);
        const level = wire.code === status.INTERNAL || wire.code === status.DATA_LOSS ? "error" : "info";
        ctx.log.log(level, "control call failed", { method, code: (error as KeelsonError).code, error: wire.details });
        callback(wire as ServiceError, null);
      },
    );
  };
}

function requireString(value: unknown, field: string): string {
  if (typeof value !== "string" || value.length === 0) {
    throw new KeelsonError({ code: "INVALID_ARGUMENT", message: `${field} is required` });
  }
  return value;
}

function exportToWire(ctx: ControlContext, exportName: string): WireVolume["export"] {
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

function sourceFromWire(source: WireVolumeSource | undefined): CloneSource | undefined {
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
  };
}

/** The wire form of a snapshot. */
export function snapshotToWire(ctx: ControlContext, s: Snapshot): WireSnapshot {
  return {
    name: s.record.name,
    uid: s.record.uid,
    volume: s.record.volumeName,
    volumeUid: s.record.volumeUid,
    sizeBytes: s.sizeBytes,
    allocatedBytes: ctx.pool.layerBytes(s.layer),
    createdAt: new Date(s.record.createdAtMs),
    labels: { ...s.record.labels },
    parentSnapshot: ctx.pool.parentSnapshotOf(s)?.record.name ?? "",
    export: exportToWire(ctx, s.name),
    connections: s.openHandles,
  };
}

/** keelson.v1.VolumeService on one engine's pool. */
export function volumeService(ctx: ControlContext): VolumeServiceServer {
  const { pool } = ctx;
  return {
    createVolume: unary(ctx, "CreateVolume", async (req) => {
      const v = await pool.createVolume({
        name: requireString(req.name, "name"),
        sizeBytes: req.sizeBytes,
        labels: req.labels,
        replicas: req.replicas,
        source: sourceFromWire(req.source),
      });
      return volumeToWire(ctx, v);
    }),
    getVolume: unary(ctx, "GetVolume", async (req) => volumeToWire(ctx, pool.getVolume(requireString(req.name, "name")))),
    listVolumes: unary(
      ctx,
      "ListVolumes",
      async (): Promise<WireListVolumesResponse> => ({ volumes: pool.listVolumes().map((v) => volumeToWire(ctx, v)) }),
    ),
    deleteVolume: unary(ctx, "DeleteVolume", async (req): Promise<WireDeleteVolumeResponse> => {
      const name = requireString(req.name, "name");
      pool.getVolume(name);
      if (req.force) await ctx.nbd.disconnectExport(name);
      const freedBytes = await pool.deleteVolume(name);
      ctx.log.log("info", "volume deleted", { volume: name, freedBytes });
      return { freedBytes };
    }),
    resizeVolume: unary(ctx, "ResizeVolume", async (req) =>
      volumeToWire(ctx, await pool.resizeVolume(requireString(req.name, "name"), req.sizeBytes)),
    ),
    revertVolume: unary(ctx, "RevertVolume", async (req) => {
      const v = await pool.revertVolume(requireString(req.name, "name"), requireString(req.snapshot, "snapshot"));
      ctx.log.log("info", "volume reverted", { volume: v.name, snapshot: req.snapshot });
      return volumeToWire(ctx, v);
    }),
  };
}

/** keelson.v1.SnapshotService on one engine's pool. */
export function snapshotService(ctx: ControlContext): SnapshotServiceServer {
  const { pool } = ctx;
  return {
    createSnapshot: unary(ctx, "CreateSnapshot", async (req) => {
      const snap = await pool.createSnapshot({
        volumeName: requireString(req.volume, "volume"),
        name: requireString(req.name, "name"),
        labels: req.labels,
      });
      return snapshotToWire(ctx, snap);
    }),
    getSnapshot: unary(ctx, "GetSnapshot", async (req) =>
      snapshotToWire(ctx, pool.getSnapshot(requireString(req.volume, "volume"), requireString(req.name, "name"))),
    ),
    listSnapshots: unary(
      ctx,
      "ListSnapshots",
      async (req): Promise<WireListSnapshotsResponse> => ({
        snapshots: pool.listSnapshots(req.volume === "" ? undefined : req.volume).map((s) => snapshotToWire(ctx, s)),
      }),
    ),
    deleteSnapshot: unary(ctx, "DeleteSnapshot", async (req): Promise<WireDeleteSnapshotResponse> => {
      const volume = requireString(req.volume, "volume");
      const name = requireString(req.name, "name");
      const startedMs = Date.now();
      const freedBytes = await pool.deleteSnapshot(volume, name);
      ctx.log.log("info", "snapshot deleted", { volume, snapshot: name, freedBytes, foldMs: Date.now() - startedMs });
      return { freedBytes };
    }),
  };
}

/** keelson.v1.NodeService of one engine. */
export function nodeService(ctx: ControlContext): NodeServiceServer {
  return {
    getNode: unary(ctx, "GetNode", async (): Promise<WireNode> => {
      const space = ctx.pool.space();
      return {
        nodeId: ctx.nodeId,
        version: ctx.version,
        pool: {
          uid: ctx.pool.layout.uid,
          path: ctx.pool.device.path,
          totalBytes: space.totalBytes,
          allocatedBytes: space.allocatedBytes,
          freeBytes: space.freeBytes,
          extentSizeBytes: ctx.pool.layout.extentSizeBytes,
          volumeCount: ctx.pool.listVolumes().length,
          snapshotCount: ctx.pool.listSnapshots().length,
        },
        nbdTcpAddress: ctx.nbd.tcpAddress,
        nbdUnixSocket: ctx.nbd.unixSocket,
      };
    }),
  };
}
