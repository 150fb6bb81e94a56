import type { Attachment } from "@keelson/sdk";
import { isKeelsonError, KeelsonError } from "@keelson/sdk";
import type { WireAttachment, WireAttachVolumeRequest, WireDetachVolumeRequest } from "@keelson/sdk/experimental";
import { findNode } from "../cluster/peers.js";
import { removeAttachment } from "../replication/attachments.js";
import { attachReplicatedVolume, forgetAttachment } from "../replication/cluster-volumes.js";
import { DEFAULT_REPLICA_TIMEOUT_MS, type ReplicatedVolume } from "../replication/frontend.js";
import { StatusPublisher } from "../replication/status-publisher.js";
import { type ControlContext, requireCluster } from "./context.js";
import { requireString } from "./unary.js";
import { attachmentToWire } from "./volume-wire.js";

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
export async function attachVolume(ctx: ControlContext, req: WireAttachVolumeRequest): Promise<WireAttachment> {
  const name = requireString(req.name, "name");
  const m = requireCluster(ctx, "AttachVolume");
  if (req.nodeId && req.nodeId !== ctx.nodeId) {
    const node = await findNode(m, req.nodeId);
    if (!node.alive) throw new KeelsonError({ code: "UNAVAILABLE", message: `node ${req.nodeId} is down` });
    const forwarded = { name, replicaTimeoutMs: req.replicaTimeoutMs, readOnly: req.readOnly, takeover: req.takeover };
    // The peer does the whole attach (a resync may be part of it): the caller's deadline bounds it.
    const a = await m.peers.withPeer(node, (c) => c.attachVolume(forwarded), 600_000);
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
export async function detachVolume(ctx: ControlContext, req: WireDetachVolumeRequest): Promise<void> {
  const name = requireString(req.name, "name");
  const m = requireCluster(ctx, "DetachVolume");
  if (req.nodeId && req.nodeId !== ctx.nodeId) {
    const node = await findNode(m, req.nodeId);
    if (node.alive) {
      try {
        await m.peers.withPeer(node, (c) => c.detachVolume({ name, force: req.force }));
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
