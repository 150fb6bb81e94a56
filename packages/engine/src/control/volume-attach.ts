import type { Attachment } from "@keelson/sdk";
import type { WireAttachment, WireAttachVolumeRequest, WireDetachVolumeRequest } from "@keelson/sdk/experimental";
import { type ControlContext, requireCluster } from "./context.js";
import { requireString } from "./unary.js";
import { attachmentToWire } from "./volume-wire.js";

// AttachVolume and DetachVolume on the wire; what they do lives in cluster/volume-attacher.ts.

/** Attaches on the node asked for (forwarded when it is another), idempotently. */
export async function attachVolume(ctx: ControlContext, req: WireAttachVolumeRequest): Promise<WireAttachment> {
  const name = requireString(req.name, "name");
  const m = requireCluster(ctx, "AttachVolume");
  const outcome = await ctx.attacher.attach(m, {
    name,
    nodeId: req.nodeId,
    replicaTimeoutMs: req.replicaTimeoutMs,
    readOnly: req.readOnly,
    takeover: req.takeover,
  });
  return outcome.on === "peer" ? attachmentFromSdk(outcome.attachment) : attachmentToWire(ctx, outcome.volume);
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
  await ctx.attacher.detach(m, { name, nodeId: req.nodeId, force: req.force });
}
