import { type ServerUnaryCall, type ServiceError, type sendUnaryData, status } from "@grpc/grpc-js";
import { KeelsonError, toServiceError } from "@keelson/sdk";
import {
  type NodeServiceServer,
  type VolumeServiceServer,
  type WireDeleteVolumeResponse,
  type WireListVolumesResponse,
  type WireNode,
  type WireVolume,
  WireVolumeState,
} from "@keelson/sdk/experimental";
import type { NbdServer } from "../nbd/server.js";
import { EXTENT_SIZE_BYTES } from "../store/layout.js";
import type { Pool } from "../store/pool.js";
import type { Volume } from "../store/volume.js";
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

/** The wire form of a volume. */
export function volumeToWire(ctx: ControlContext, v: Volume): WireVolume {
  const tcp = ctx.nbd.tcpAddress;
  const unix = ctx.nbd.unixSocket;
  return {
    name: v.name,
    uid: v.record.uid,
    sizeBytes: v.sizeBytes,
    allocatedBytes: v.allocatedExtents() * EXTENT_SIZE_BYTES,
    state: WireVolumeState.VOLUME_STATE_HEALTHY,
    labels: { ...v.record.labels },
    createdAt: new Date(v.record.createdAtMs),
    replicas: v.record.replicas,
    export: {
      exportName: v.name,
      nbdTcpUri: tcp ? `nbd://${tcp}/${encodeURIComponent(v.name)}` : "",
      nbdUnixUri: unix ? `nbd+unix:///${encodeURIComponent(v.name)}?socket=${unix}` : "",
    },
    connections: v.openHandles,
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
          extentSizeBytes: EXTENT_SIZE_BYTES,
          volumeCount: ctx.pool.listVolumes().length,
        },
        nbdTcpAddress: ctx.nbd.tcpAddress,
        nbdUnixSocket: ctx.nbd.unixSocket,
      };
    }),
  };
}
