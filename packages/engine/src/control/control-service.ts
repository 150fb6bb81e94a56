import { type ServerUnaryCall, type ServiceError, type sendUnaryData, status } from "@grpc/grpc-js";
import { type Attachment, isKeelsonError, KeelsonError, type Snapshot as SdkSnapshot, toServiceError } from "@keelson/sdk";
import {
  type NodeServiceServer,
  type SnapshotServiceServer,
  type VolumeServiceServer,
  type WireAttachment,
  type WireAttachVolumeRequest,
  type WireClusterNode,
  type WireCreateVolumeRequest,
  type WireDeleteSnapshotResponse,
  type WireDeleteVolumeResponse,
  type WireDetachVolumeRequest,
  type WireListAttachmentsResponse,
  type WireListNodesResponse,
  type WireListSnapshotsResponse,
  type WireListVolumesResponse,
  type WireNode,
  type WireSnapshot,
  type WireVolume,
  type WireVolumeSource,
  WireVolumeState,
} from "@keelson/sdk/experimental";
import { ClientRuntimeError, GRPCGenericError } from "etcd3";
import { type DiskRecord, listDiskReports } from "../cluster/disk-reports.js";
import type { ClusterMembership } from "../cluster/membership.js";
import { findNode, withPeer } from "../cluster/peers.js";
import type { NbdServer } from "../nbd/server.js";
import { DEFAULT_HEADROOM, type DiskCapability } from "../qos/admission.js";
import { defaultPolicy, type QosPolicy } from "../qos/policy.js";
import type { QosManager } from "../qos/qos-manager.js";
import { readAttachments, removeAttachment } from "../replication/attachments.js";
import {
  createReplicatedSnapshot,
  deleteReplicatedSnapshot,
  findSnapshotRecord,
  listSnapshotRecords,
  snapshotFromHolders,
} from "../replication/cluster-snapshots.js";
import {
  attachReplicatedVolume,
  createReplicatedVolume,
  findClusterVolume,
  forgetAttachment,
  getClusterVolume,
} from "../replication/cluster-volumes.js";
import type { OpenLocalExport } from "../replication/local-replica.js";
import type { RebuildThrottle } from "../replication/rebuild-throttle.js";
import { volumeState } from "../replication/replica-set.js";
import { DEFAULT_REPLICA_TIMEOUT_MS, type ReplicatedVolume } from "../replication/replicated-volume.js";
import { StatusPublisher } from "../replication/status-publisher.js";
import type { VolumeSource } from "../store/catalog.js";
import type { CloneSource, Pool } from "../store/pool.js";
import type { Snapshot, Volume } from "../store/volume.js";
import type { Logger } from "../util/log.js";
import { capabilityToWire, policyToWire, resolvePolicy } from "./qos-wire.js";

/** What the control API serves from. */
export interface ControlContext {
  pool: Pool;
  nbd: NbdServer;
  qos: QosManager;
  /** Named QoS policies from the engine's configuration. */
  qosClasses: ReadonlyMap<string, QosPolicy>;
  /** Measures the disk's capability again (about a second). */
  calibrate(): Promise<DiskCapability>;
  /** This engine's cluster membership; null for a single engine (set once the cluster is joined). */
  membership: ClusterMembership | null;
  /** Replicated volumes attached on this node, by name (the NBD catalog serves them). */
  frontends: Map<string, ReplicatedVolume>;
  /** Paces the rebuilds of every frontend on this node. */
  rebuildThrottle: RebuildThrottle;
  /** Opens one of this node's exports in-process (a frontend's own replica). */
  openLocal: OpenLocalExport;
  zone: string;
  nodeId: string;
  version: string;
  log: Logger;
}

function toWireError(error: unknown): Partial<ServiceError> {
  if (error instanceof KeelsonError) return toServiceError(error);
  // etcd away (restarting, cut off): the call may succeed later, so it is UNAVAILABLE, not INTERNAL.
  if (error instanceof GRPCGenericError || error instanceof ClientRuntimeError) {
    return toServiceError(new KeelsonError({ code: "UNAVAILABLE", message: `etcd: ${error.message}`, cause: error }));
  }
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
    qosClass: v.record.qosClass ?? "",
    qos: policyToWire(v.record.qos ?? defaultPolicy()),
    qosStatus: ctx.qos.status(v.record.uid),
    epoch: v.record.epoch ?? 0,
  };
}

/** The wire form of a snapshot. */
export function snapshotToWire(ctx: ControlContext, s: Snapshot, holders: string[] = []): WireSnapshot {
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
    holders,
  };
}

/** A snapshot a peer returned (through the SDK), in wire form for this call's caller. */
function snapshotFromSdk(s: SdkSnapshot): WireSnapshot {
  return { ...s, labels: { ...s.labels } };
}

/** keelson.v1.VolumeService on one engine's pool. */
export function volumeService(ctx: ControlContext): VolumeServiceServer {
  const { pool } = ctx;
  return {
    createVolume: unary(ctx, "CreateVolume", async (req) => {
      if (req.replicas > 1) return createReplicated(ctx, req);
      const { policy, qosClass } = resolvePolicy(ctx.qosClasses, req.qosClass, req.qos);
      const v = await pool.createVolume({
        name: requireString(req.name, "name"),
        sizeBytes: req.sizeBytes,
        labels: req.labels,
        replicas: req.replicas,
        source: sourceFromWire(req.source),
        qos: policy,
        qosClass,
      });
      ctx.qos.apply(v.record.uid, v.record.qos ?? defaultPolicy());
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
      const uid = pool.getVolume(name).record.uid;
      const freedBytes = await pool.deleteVolume(name);
      ctx.qos.remove(uid);
      ctx.log.log("info", "volume deleted", { volume: name, freedBytes });
      return { freedBytes };
    }),
    resizeVolume: unary(ctx, "ResizeVolume", async (req) => {
      const name = requireString(req.name, "name");
      await refuseReplicated(ctx, name, "resizing");
      return volumeToWire(ctx, await pool.resizeVolume(name, req.sizeBytes));
    }),
    setVolumeQos: unary(ctx, "SetVolumeQos", async (req) => {
      const name = requireString(req.name, "name");
      const { policy, qosClass } = resolvePolicy(ctx.qosClasses, req.qosClass, req.qos);
      const v = await pool.setVolumeQos(name, policy, qosClass);
      ctx.qos.apply(v.record.uid, policy);
      ctx.log.log("info", "volume QoS set", { volume: name, qosClass, qos: policy });
      return volumeToWire(ctx, v);
    }),
    attachVolume: unary(ctx, "AttachVolume", (req) => attachVolume(ctx, req)),
    detachVolume: unary(ctx, "DetachVolume", async (req) => {
      await detachVolume(ctx, req);
      return {};
    }),
    listAttachments: unary(ctx, "ListAttachments", async (req): Promise<WireListAttachmentsResponse> => {
      const name = requireString(req.name, "name");
      const m = requireCluster(ctx, "ListAttachments");
      await getClusterVolume(m, name);
      const { entries } = await readAttachments(m, name);
      return {
        attachments: entries.map((e) => ({
          nodeId: e.nodeId,
          readOnly: e.readOnly,
          epoch: e.epoch,
          attachedAt: new Date(e.attachedAtMs),
        })),
      };
    }),
    getAttachment: unary(ctx, "GetAttachment", async (req): Promise<WireAttachment> => {
      const name = requireString(req.name, "name");
      const rv = ctx.frontends.get(name);
      if (!rv) throw new KeelsonError({ code: "VOLUME_NOT_FOUND", message: `volume ${name} is not attached on ${ctx.nodeId}` });
      return attachmentToWire(ctx, rv);
    }),
    fenceVolume: unary(ctx, "FenceVolume", async (req) => {
      const v = await pool.fenceVolume(requireString(req.name, "name"), req.epoch);
      ctx.log.log("info", "volume fenced", { volume: v.name, epoch: req.epoch });
      return volumeToWire(ctx, v);
    }),
    revertVolume: unary(ctx, "RevertVolume", async (req) => {
      await refuseReplicated(ctx, requireString(req.name, "name"), "reverting");
      const v = await pool.revertVolume(requireString(req.name, "name"), requireString(req.snapshot, "snapshot"));
      ctx.log.log("info", "volume reverted", { volume: v.name, snapshot: req.snapshot });
      return volumeToWire(ctx, v);
    }),
  };
}

/** Each writable attachment's status publisher. */
const publishers = new WeakMap<ReplicatedVolume, StatusPublisher>();
/** Attaches under way on an engine (keyed by its frontends map), by volume. */
const attachesUnderWay = new WeakMap<Map<string, ReplicatedVolume>, Map<string, Promise<ReplicatedVolume>>>();

function inProgress(ctx: ControlContext): Map<string, Promise<ReplicatedVolume>> {
  let m = attachesUnderWay.get(ctx.frontends);
  if (!m) {
    m = new Map();
    attachesUnderWay.set(ctx.frontends, m);
  }
  return m;
}

/** Attaches on the node asked for (forwarded when it is another), idempotently. */
async function attachVolume(ctx: ControlContext, req: WireAttachVolumeRequest): Promise<WireAttachment> {
  const name = requireString(req.name, "name");
  const m = requireCluster(ctx, "AttachVolume");
  if (req.nodeId && req.nodeId !== ctx.nodeId) {
    const node = await findNode(m, req.nodeId);
    if (!node.alive) throw new KeelsonError({ code: "UNAVAILABLE", message: `node ${req.nodeId} is down` });
    const forwarded = { name, replicaTimeoutMs: req.replicaTimeoutMs, readOnly: req.readOnly, takeover: req.takeover };
    // The peer does the whole attach (a resync may be part of it): the caller's deadline bounds it.
    const a = await withPeer(node, (c) => c.attachVolume(forwarded), 600_000);
    return attachmentFromSdk(a);
  }
  // A retry (the client's deadline passed while a resync ran) joins the attach under way rather
  // than starting one that would fence it, again and again.
  const underWay = inProgress(ctx).get(name);
  if (underWay) await underWay.catch(() => undefined);
  const existing = ctx.frontends.get(name);
  if (existing?.serving) {
    if (existing.readOnly === req.readOnly) return attachmentToWire(ctx, existing);
    throw new KeelsonError({
      code: "ATTACHED_ELSEWHERE",
      message: `volume ${name} is attached ${existing.readOnly ? "read-only" : "writable"} on ${ctx.nodeId}; detach it first`,
    });
  }
  const attaching = attachReplicatedVolume(m, name, {
    replicaTimeoutMs: req.replicaTimeoutMs || DEFAULT_REPLICA_TIMEOUT_MS,
    rebuildThrottle: ctx.rebuildThrottle,
    openLocal: ctx.openLocal,
    readOnly: req.readOnly,
    takeover: req.takeover,
  });
  inProgress(ctx).set(name, attaching);
  let rv: ReplicatedVolume;
  try {
    rv = await attaching;
  } finally {
    if (inProgress(ctx).get(name) === attaching) inProgress(ctx).delete(name);
  }
  existing?.close();
  ctx.frontends.set(name, rv);
  if (!rv.readOnly) {
    const publisher = new StatusPublisher(m, rv);
    publishers.set(rv, publisher);
    publisher.start();
  }
  ctx.log.log("info", "volume attached", { volume: name, epoch: rv.epoch, readOnly: rv.readOnly, replicas: rv.status() });
  return attachmentToWire(ctx, rv);
}

/** An attachment a peer returned (through the SDK), back in wire form for this call's caller. */
function attachmentFromSdk(a: Attachment): WireAttachment {
  return {
    ...a,
    replicas: a.replicas.map((r) => ({ ...r, faultedAt: r.faultedAt, lastRebuild: r.lastRebuild })),
  };
}

/** Detaches on the node asked for; a node that is down only loses its entry in the record. Idempotent. */
async function detachVolume(ctx: ControlContext, req: WireDetachVolumeRequest): Promise<void> {
  const name = requireString(req.name, "name");
  const m = requireCluster(ctx, "DetachVolume");
  if (req.nodeId && req.nodeId !== ctx.nodeId) {
    const node = await findNode(m, req.nodeId);
    if (node.alive) {
      try {
        await withPeer(node, (c) => c.detachVolume({ name, force: req.force }));
        return;
      } catch (error) {
        // Not answering (just killed, or cut off): handled like a node that is down.
        if (!isKeelsonError(error, "UNAVAILABLE") && !isKeelsonError(error, "DEADLINE_EXCEEDED")) throw error;
      }
    }
    await forgetAttachment(m, name, req.nodeId);
    ctx.log.log("warn", "attachment of an unreachable node removed (a writer there is fenced)", {
      volume: name,
      node: req.nodeId,
    });
    return;
  }
  const rv = ctx.frontends.get(name);
  if (rv) {
    const { clean } = await rv.detach(req.force);
    await publishers.get(rv)?.stop("detached");
    ctx.frontends.delete(name);
    await removeAttachment(m, name, ctx.nodeId, rv.epoch);
    ctx.log.log("info", "volume detached", { volume: name, epoch: rv.epoch, readOnly: rv.readOnly, clean });
    return;
  }
  // Not served here (say the engine restarted): the record must not keep claiming it.
  await removeAttachment(m, name, ctx.nodeId);
}

/** Calls that would change one node's replica of a replicated volume only (and so make it differ) are refused. */
async function refuseReplicated(ctx: ControlContext, name: string, what: string): Promise<void> {
  if (ctx.membership && (await findClusterVolume(ctx.membership, name))) {
    throw new KeelsonError({
      code: "INVALID_ARGUMENT",
      message: `${what} a replicated volume (${name}) is not supported yet: it would change this node's replica only`,
    });
  }
}

function requireCluster(ctx: ControlContext, what: string): ClusterMembership {
  if (ctx.membership) return ctx.membership;
  throw new KeelsonError({ code: "INVALID_ARGUMENT", message: `${what} needs a cluster: start keelsond with --etcd` });
}

/** A volume with more than one replica: placed across the cluster, recorded in etcd; not attached yet. */
async function createReplicated(ctx: ControlContext, req: WireCreateVolumeRequest): Promise<WireVolume> {
  const m = requireCluster(ctx, `a volume with ${req.replicas} replicas`);
  if (req.source || req.qosClass || req.qos) {
    throw new KeelsonError({ code: "INVALID_ARGUMENT", message: "replicated volumes do not take a clone source or QoS yet" });
  }
  const name = requireString(req.name, "name");
  const record = await createReplicatedVolume(m, { name, sizeBytes: req.sizeBytes, replicas: req.replicas, labels: req.labels });
  ctx.log.log("info", "replicated volume created", { volume: name, replicas: record.replicas });
  const local = ctx.pool.findVolume(name);
  if (local) return { ...volumeToWire(ctx, local), replicas: record.replicas.length };
  return {
    name,
    uid: "",
    sizeBytes: record.sizeBytes,
    allocatedBytes: 0,
    state: WireVolumeState.VOLUME_STATE_HEALTHY,
    labels: { ...req.labels },
    createdAt: new Date(record.createdAtMs),
    replicas: record.replicas.length,
    export: exportToWire(ctx, name),
    connections: 0,
    source: undefined,
    qosClass: "",
    qos: policyToWire(defaultPolicy()),
    qosStatus: ctx.qos.status(""),
    epoch: 0,
  };
}

function attachmentToWire(ctx: ControlContext, rv: ReplicatedVolume): WireAttachment {
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

/** keelson.v1.SnapshotService on one engine's pool. */
export function snapshotService(ctx: ControlContext): SnapshotServiceServer {
  const { pool } = ctx;
  return {
    createSnapshot: unary(ctx, "CreateSnapshot", async (req) => {
      const volume = requireString(req.volume, "volume");
      const name = requireString(req.name, "name");
      const m = ctx.membership;
      // A replicated volume's snapshot is taken on each replica at one point, not on this node's copy alone.
      if (!req.replicaOnly && m && (await findClusterVolume(m, volume))) {
        const s = await createReplicatedSnapshot(m, { volume, name, labels: req.labels }, ctx.frontends.get(volume));
        ctx.log.log("info", "replicated snapshot created", { volume, snapshot: name, holders: s.holders });
        return snapshotFromSdk(s);
      }
      const snap = await pool.createSnapshot({ volumeName: volume, name, labels: req.labels });
      return snapshotToWire(ctx, snap);
    }),
    getSnapshot: unary(ctx, "GetSnapshot", async (req) => {
      const volume = requireString(req.volume, "volume");
      const name = requireString(req.name, "name");
      const record = ctx.membership ? await findSnapshotRecord(ctx.membership, volume, name) : null;
      const local = pool.findSnapshot(`${volume}@${name}`);
      if (local || !record || !ctx.membership) return snapshotToWire(ctx, pool.getSnapshot(volume, name), record?.holders);
      return snapshotFromSdk(await snapshotFromHolders(ctx.membership, record));
    }),
    listSnapshots: unary(ctx, "ListSnapshots", async (req): Promise<WireListSnapshotsResponse> => {
      const volume = req.volume === "" ? undefined : req.volume;
      const records = ctx.membership ? await listSnapshotRecords(ctx.membership, volume) : [];
      const holders = new Map(records.map((r) => [`${r.volume}@${r.name}`, r.holders]));
      return { snapshots: pool.listSnapshots(volume).map((s) => snapshotToWire(ctx, s, holders.get(s.name))) };
    }),
    deleteSnapshot: unary(ctx, "DeleteSnapshot", async (req): Promise<WireDeleteSnapshotResponse> => {
      const volume = requireString(req.volume, "volume");
      const name = requireString(req.name, "name");
      const startedMs = Date.now();
      if (!req.replicaOnly && ctx.membership) {
        const freed = await deleteReplicatedSnapshot(ctx.membership, volume, name);
        if (freed !== null) {
          ctx.log.log("info", "replicated snapshot deleted", { volume, snapshot: name, freedBytes: freed });
          return { freedBytes: freed };
        }
      }
      const freedBytes = await pool.deleteSnapshot(volume, name);
      ctx.log.log("info", "snapshot deleted", { volume, snapshot: name, freedBytes, foldMs: Date.now() - startedMs });
      return { freedBytes };
    }),
  };
}

function nodeToWire(ctx: ControlContext): WireNode {
  const space = ctx.pool.space();
  const reserved = ctx.pool.reserved();
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
      capability: capabilityToWire(ctx.pool.disk),
      reservedIops: reserved.iops,
      reservedBytesPerSec: reserved.bytesPerSec,
    },
    nbdTcpAddress: ctx.nbd.tcpAddress,
    nbdUnixSocket: ctx.nbd.unixSocket,
    qosClasses: Object.fromEntries([...ctx.qosClasses].map(([k, v]) => [k, policyToWire(v)])),
    zone: ctx.zone,
    leader: ctx.membership ? ctx.membership.isLeader : true,
    etcdEndpoints: ctx.membership ? ctx.membership.endpoints : "",
  };
}

function diskToWire(d: DiskRecord | undefined): WireClusterNode["disk"] {
  if (!d) return undefined;
  return {
    poolUid: d.poolUid,
    path: d.path,
    totalBytes: d.totalBytes,
    freeBytes: d.freeBytes,
    volumeCount: d.volumeCount,
    snapshotCount: d.snapshotCount,
    updatedAt: new Date(d.updatedAtMs),
  };
}

async function listClusterNodes(ctx: ControlContext): Promise<WireListNodesResponse> {
  if (!ctx.membership) {
    const host = ctx.nbd.tcpAddress.slice(0, ctx.nbd.tcpAddress.lastIndexOf(":"));
    const self = { nodeId: ctx.nodeId, controlAddress: "", nbdAddress: ctx.nbd.tcpAddress, storageAddress: host, zone: ctx.zone };
    return { nodes: [{ ...self, state: "up", stateSince: undefined, alive: true, leader: true, disk: undefined }] };
  }
  const [nodes, disks] = await Promise.all([ctx.membership.nodes(), listDiskReports(ctx.membership)]);
  return {
    nodes: nodes.map((n) => ({
      disk: diskToWire(disks.get(n.nodeId)),
      nodeId: n.nodeId,
      controlAddress: n.controlAddress,
      nbdAddress: n.nbdAddress,
      storageAddress: n.storageAddress,
      zone: n.zone,
      state: n.state,
      stateSince: new Date(n.stateSinceMs),
      alive: n.alive,
      leader: n.leader,
    })),
  };
}

function positive(value: number, field: string): number {
  if (!Number.isFinite(value) || value <= 0) {
    throw new KeelsonError({ code: "INVALID_ARGUMENT", message: `${field} must be a positive number, got ${value}` });
  }
  return value;
}

/** keelson.v1.NodeService of one engine. */
export function nodeService(ctx: ControlContext): NodeServiceServer {
  return {
    getNode: unary(ctx, "GetNode", async (): Promise<WireNode> => nodeToWire(ctx)),
    listNodes: unary(ctx, "ListNodes", () => listClusterNodes(ctx)),
    setDiskCapability: unary(ctx, "SetDiskCapability", async (req): Promise<WireNode> => {
      if (req.headroom < 0 || req.headroom >= 1) {
        throw new KeelsonError({ code: "INVALID_ARGUMENT", message: `headroom must be in [0, 1), got ${req.headroom}` });
      }
      const headroom = req.headroom || (ctx.pool.disk?.headroom ?? DEFAULT_HEADROOM);
      const cap: DiskCapability = req.recalibrate
        ? { ...(await ctx.calibrate()), headroom }
        : {
            iops: positive(req.iops, "iops"),
            bytesPerSec: positive(req.bytesPerSec, "bytesPerSec"),
            source: "operator",
            measuredAtMs: Date.now(),
            headroom,
          };
      await ctx.pool.setDiskCapability(cap);
      ctx.log.log("info", "disk capability set", { ...cap });
      return nodeToWire(ctx);
    }),
  };
}
