import { isKeelsonError, KeelsonError, type SnapshotRef } from "@keelson/sdk";
import type {
  VolumeServiceServer,
  WireAttachment,
  WireCreateVolumeRequest,
  WireDeleteVolumeResponse,
  WireListAttachmentsResponse,
  WireListVolumesResponse,
  WireVolume,
} from "@keelson/sdk/experimental";
import { readAttachments } from "../cluster/attachments.js";
import { createReplicatedVolume, findClusterVolume, getClusterVolume, listClusterVolumes } from "../cluster/cluster-volumes.js";
import { declareInSync } from "../cluster/declare-in-sync.js";
import { currentEpoch } from "../cluster/epochs.js";
import type { ClusterMembership } from "../cluster/membership.js";
import { requireLimitsOnly, setReplicatedVolumeQos } from "../cluster/replicated-qos.js";
import { cloneReplicatedVolume } from "../cluster/volume-clone.js";
import { deleteReplicatedVolume } from "../cluster/volume-delete.js";
import { resizeReplicatedVolume } from "../cluster/volume-resize.js";
import { refs } from "../metadata/index.js";
import { defaultPolicy, type QosPolicy } from "../qos/policy.js";
import { validateLabels, validateSizeBytes, validateVolumeName } from "../store/validation.js";
import { isReplicaCopy, type Volume } from "../store/volume.js";
import { type ControlContext, requireCluster } from "./context.js";
import { resolvePolicy } from "./qos-wire.js";
import { replicatedVolumeToWire } from "./replicated-wire.js";
import { requireString, unary } from "./unary.js";
import { attachVolume, detachVolume } from "./volume-attach.js";
import { attachmentToWire, sourceFromWire, volumeToWire } from "./volume-wire.js";

/** keelson.v1.VolumeService on one engine's pool. */
export function volumeService(ctx: ControlContext): VolumeServiceServer {
  const { pool } = ctx;
  return {
    createVolume: unary(ctx, "CreateVolume", (req) =>
      req.replicas > 1 || req.replicated ? createReplicated(ctx, req) : createLocal(ctx, req),
    ),
    getVolume: unary(ctx, "GetVolume", async (req) => {
      const name = requireString(req.name, "name");
      // Another engine asking about this node's replica: the pool alone (no etcd, no peers).
      if (req.replicaOnly) return volumeToWire(ctx, pool.getVolume(name));
      const m = ctx.membership();
      const replicated = m ? await findClusterVolume(m, name) : null;
      if (m && replicated) return replicatedVolumeToWire(ctx, m, replicated);
      return volumeToWire(ctx, await ownVolume(ctx, name));
    }),
    listVolumes: unary(ctx, "ListVolumes", () => listVolumes(ctx)),
    deleteVolume: unary(ctx, "DeleteVolume", async (req): Promise<WireDeleteVolumeResponse> => {
      const name = requireString(req.name, "name");
      const m = ctx.membership();
      if (m && !req.replicaOnly && (await findClusterVolume(m, name))) return deleteReplicated(ctx, m, name, req.force);
      const { uid } = (req.replicaOnly ? pool.getVolume(name) : await ownVolume(ctx, name)).record;
      const freedBytes = await deleteLocal(ctx, name, req.force);
      ctx.qos.remove(uid);
      ctx.replicaAccess?.forget(name);
      ctx.log.log("info", "volume deleted", { volume: name, freedBytes });
      return { freedBytes };
    }),
    resizeVolume: unary(ctx, "ResizeVolume", async (req) => {
      const name = requireString(req.name, "name");
      const m = ctx.membership();
      if (m && !req.replicaOnly && (await findClusterVolume(m, name))) return resizeReplicated(ctx, m, name, req.sizeBytes);
      if (!req.replicaOnly) await ownVolume(ctx, name);
      return volumeToWire(ctx, await pool.resizeVolume(name, req.sizeBytes));
    }),
    setVolumeQos: unary(ctx, "SetVolumeQos", async (req) => {
      const name = requireString(req.name, "name");
      const { policy, qosClass } = resolvePolicy(ctx.qosClasses, req.qosClass, req.qos);
      const m = ctx.membership();
      const replicated = m ? await findClusterVolume(m, name) : null;
      if (m && replicated) return setReplicatedQos(ctx, m, name, { policy, qosClass: qosClass ?? "" });
      await ownVolume(ctx, name);
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
    listAttachments: unary(ctx, "ListAttachments", (req) => listAttachments(ctx, req.name)),
    declareInSync: unary(ctx, "DeclareInSync", async (req) => {
      const m = requireCluster(ctx, "DeclareInSync");
      const name = requireString(req.name, "name");
      const nodeId = requireString(req.nodeId, "nodeId");
      await declareInSync(m, { name, nodeId, reason: req.reason });
      // An operator's decision that may lose data: logged where operators look first.
      ctx.log.log("warn", "replica declared in sync by the operator", { volume: name, node: nodeId, reason: req.reason });
      return replicatedVolumeToWire(ctx, m, await getClusterVolume(m, name));
    }),
    getAttachment: unary(ctx, "GetAttachment", async (req): Promise<WireAttachment> => {
      const name = requireString(req.name, "name");
      const rv = ctx.frontends.get(name);
      if (!rv) throw new KeelsonError({ code: "VOLUME_NOT_FOUND", message: `volume ${name} is not attached on ${ctx.nodeId}` });
      return attachmentToWire(ctx, rv);
    }),
    fenceVolume: unary(ctx, "FenceVolume", async (req, caller) => {
      const name = requireString(req.name, "name");
      // An engine fences a replica at an epoch it took in etcd: one etcd has not granted (a client's
      // guess near 2^53) would shut the volume's every future writer out, so it is refused. The next
      // epoch needs no etcd read (an attach fences every replica at once, and a replica's node whose
      // etcd answers slowly must not fail it); one past that is checked against etcd.
      const m = requireCluster(ctx, "fencing a replica");
      const fencedAt = pool.findVolume(name)?.record.epoch ?? 0;
      if (req.epoch > fencedAt + 1) await requireGrantedEpoch(m, name, req.epoch);
      const v = await pool.fenceVolume(name, req.epoch);
      // The fencer's frontend opens this replica next: who it is decides that open when etcd cannot be asked.
      // Only a fence that raised the epoch counts (one at the current epoch changes nothing).
      if (req.epoch > fencedAt) ctx.replicaAccess?.fenced(name, req.epoch, caller);
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

/**
 * Volume `name` of this node's pool as an application's volume. On a cluster node, a copy of a deleted
 * replicated volume that the delete left here (its record names this node among the copies the leader
 * removes later, because the node did not answer then) is VOLUME_NOT_FOUND: the volume was deleted, and
 * its copy must not reappear as a volume of its own. Other copies without a record (a create rolled back
 * in part) stay visible, so that an operator can delete them.
 */
async function ownVolume(ctx: ControlContext, name: string): Promise<Volume> {
  const v = ctx.pool.getVolume(name);
  const m = ctx.membership();
  if (m && isReplicaCopy(v) && (await m.metadata.get(refs.leftover(name)))?.value.nodes.includes(m.nodeId)) {
    throw new KeelsonError({
      code: "VOLUME_NOT_FOUND",
      message: `volume ${name} not found: it was deleted, and ${m.nodeId} still holds a copy of it, which the cluster's leader removes`,
    });
  }
  return v;
}

/** Names of deleted replicated volumes whose copy on this node the leader is still to remove. */
async function leftoverHere(m: ClusterMembership): Promise<Set<string>> {
  const left = await m.metadata.list("leftover");
  return new Set(left.filter((l) => l.value.nodes.includes(m.nodeId)).map((l) => l.ref.id));
}

/** Attempts at a forced delete whose volume an opening connection took again after its connections were cut. */
const FORCED_DELETE_ATTEMPTS = 5;

/**
 * Deletes this pool's volume `name`; with `force` its NBD connections are cut first. A connection whose
 * handshake was past the open when they were cut registers only afterwards (a replica open waits on its
 * grant), so a forced delete that finds the volume in use again cuts again, a bounded number of times.
 */
async function deleteLocal(ctx: ControlContext, name: string, force: boolean): Promise<number> {
  for (let attempt = 1; ; attempt++) {
    if (force) await ctx.nbd.disconnectExport(name);
    try {
      return await ctx.pool.deleteVolume(name);
    } catch (error) {
      if (!force || attempt >= FORCED_DELETE_ATTEMPTS || !isKeelsonError(error, "VOLUME_IN_USE")) throw error;
      ctx.log.log("warn", "forced delete: a connection opened meanwhile; cutting again", { volume: name, attempt });
      await new Promise((resolve) => setTimeout(resolve, 10 * attempt));
    }
  }
}

/** A volume of this node's pool alone (one replica), with its QoS applied at once. */
async function createLocal(ctx: ControlContext, req: WireCreateVolumeRequest): Promise<WireVolume> {
  if (req.minInSync > 1) {
    throw new KeelsonError({
      code: "INVALID_ARGUMENT",
      message: `minInSync ${req.minInSync} needs as many replicas; replicas is ${req.replicas || 1}`,
    });
  }
  const { policy, qosClass } = resolvePolicy(ctx.qosClasses, req.qosClass, req.qos);
  const v = await ctx.pool.createVolume({
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
}

/**
 * This pool's volumes and, in a cluster, every replicated volume (also
 * those with no replica here), by name. A replica here is listed as its
 * replicated volume, not as a volume of its own.
 */
async function listVolumes(ctx: ControlContext): Promise<WireListVolumesResponse> {
  const m = ctx.membership();
  const records = m ? await listClusterVolumes(m) : [];
  const replicated = new Set(records.map((r) => r.name));
  const left = m ? await leftoverHere(m) : new Set<string>();
  const volumes = [
    ...ctx.pool
      .listVolumes()
      .filter((v) => !replicated.has(v.name) && !(isReplicaCopy(v) && left.has(v.name)))
      .map((v) => volumeToWire(ctx, v)),
    ...(m ? await Promise.all(records.map((r) => replicatedVolumeToWire(ctx, m, r))) : []),
  ];
  return { volumes: volumes.sort((a, b) => (a.name < b.name ? -1 : a.name > b.name ? 1 : 0)) };
}

/** The nodes a replicated volume is attached on, as its record in the cluster says. */
async function listAttachments(ctx: ControlContext, volume: string): Promise<WireListAttachmentsResponse> {
  // Checked in here, not by the caller: the unary edge maps a rejection, and a throw before the promise would be INTERNAL.
  const name = requireString(volume, "name");
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
}

/** Calls that would change one node's replica of a replicated volume only (and so make it differ) are refused. */
async function refuseReplicated(ctx: ControlContext, name: string, what: string): Promise<void> {
  const m = ctx.membership();
  if (m && (await findClusterVolume(m, name))) {
    throw new KeelsonError({
      code: "INVALID_ARGUMENT",
      message: `${what} a replicated volume (${name}) is not supported yet: it would change this node's replica only`,
    });
  }
}

/**
 * SetVolumeQos of a replicated volume: stored in its record, the one truth.
 * Every node where it is attached applies the record's policy to its
 * frontend within QOS_REFRESH_INTERVAL_MS (cluster/volume-attacher.ts); this
 * node at once.
 */
async function setReplicatedQos(
  ctx: ControlContext,
  m: ClusterMembership,
  name: string,
  asked: { policy: QosPolicy; qosClass: string },
): Promise<WireVolume> {
  const { record } = await setReplicatedVolumeQos(m, name, asked.policy, asked.qosClass);
  await ctx.attacher.followRecord(m, name);
  ctx.log.log("info", "replicated volume QoS set", { volume: name, qosClass: asked.qosClass, qos: asked.policy });
  return replicatedVolumeToWire(ctx, m, record);
}

/**
 * A cluster volume (more than one replica, or asked for as `replicated`):
 * placed across the cluster, recorded in etcd; not attached yet. Replicas 0
 * means 1, as for a local volume.
 */
async function createReplicated(ctx: ControlContext, req: WireCreateVolumeRequest): Promise<WireVolume> {
  const replicas = Math.max(1, req.replicas);
  const m = requireCluster(
    ctx,
    req.replicas > 1 ? `a volume with ${req.replicas} replicas` : "a replicated volume (replicated: true)",
  );
  // Checked here, as a single engine's create checks them, before etcd or a peer is asked.
  const name = validateVolumeName(req.name);
  if (!req.source || req.sizeBytes !== 0) validateSizeBytes(req.sizeBytes);
  validateLabels(req.labels);
  const asked = req.qosClass || req.qos ? resolvePolicy(ctx.qosClasses, req.qosClass, req.qos) : null;
  const qos = asked ? { qos: requireLimitsOnly(name, asked.policy), qosClass: asked.qosClass } : {};
  const options = {
    name,
    sizeBytes: req.sizeBytes,
    replicas,
    labels: req.labels,
    ...(req.minInSync > 0 ? { minInSync: req.minInSync } : {}),
    ...qos,
  };
  const source = replicatedSourceFromWire(req.source);
  const record = source
    ? await cloneReplicatedVolume(m, { ...options, source }, ctx.frontends.get("volume" in source ? source.volume : ""))
    : await createReplicatedVolume(m, options);
  ctx.log.log("info", "replicated volume created", { volume: name, replicas: record.replicas });
  return replicatedVolumeToWire(ctx, m, record, req.labels);
}

/** DeleteVolume of a replicated volume: every replica and its records (see deleteReplicatedVolume). */
async function deleteReplicated(
  ctx: ControlContext,
  m: ClusterMembership,
  name: string,
  force: boolean,
): Promise<WireDeleteVolumeResponse> {
  const { freedBytes, leftOn, why } = await deleteReplicatedVolume(m, ctx.attacher, { name, force });
  ctx.log.log("info", "replicated volume deleted", { volume: name, freedBytes, ...(leftOn.length > 0 ? { leftOn, why } : {}) });
  return { freedBytes };
}

/** ResizeVolume of a replicated volume: every replica, the record, then the frontends (see resizeReplicatedVolume). */
async function resizeReplicated(ctx: ControlContext, m: ClusterMembership, name: string, sizeBytes: number): Promise<WireVolume> {
  const record = await resizeReplicatedVolume(m, ctx.attacher, { name, sizeBytes: validateSizeBytes(sizeBytes) });
  ctx.log.log("info", "replicated volume resized", { volume: name, sizeBytes: record.sizeBytes });
  return replicatedVolumeToWire(ctx, m, record);
}

/** A clone source of a replicated create, in the SDK's terms (names checked); undefined when none. */
function replicatedSourceFromWire(
  wire: WireCreateVolumeRequest["source"],
): { snapshot: SnapshotRef } | { volume: string } | undefined {
  const source = sourceFromWire(wire);
  if (!source) return undefined;
  if ("volumeName" in source) return { volume: source.volumeName };
  return { snapshot: { volume: source.snapshot.volumeName, name: source.snapshot.name } };
}

/** INVALID_ARGUMENT unless etcd has granted `epoch` for `volume` (it is at most the volume's current epoch there). */
async function requireGrantedEpoch(m: ClusterMembership, volume: string, epoch: number): Promise<void> {
  const current = await currentEpoch(m.metadata, volume);
  if (epoch >= 1 && epoch <= current) return;
  throw new KeelsonError({
    code: "INVALID_ARGUMENT",
    message: `epoch: volume ${volume} has no epoch ${epoch} (its current epoch is ${current}); epochs come from the cluster`,
  });
}
