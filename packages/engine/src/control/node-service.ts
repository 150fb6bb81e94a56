import { KeelsonError } from "@keelson/sdk";
import type { NodeServiceServer, WireListNodesResponse, WireNode } from "@keelson/sdk/experimental";
import { listDiskReports } from "../cluster/disk-reports.js";
import { DEFAULT_HEADROOM, type DiskCapability } from "../qos/admission.js";
import type { ControlContext } from "./context.js";
import { clusterNodeToWire, nodeToWire, selfNodeToWire } from "./node-wire.js";
import { positive, unary } from "./unary.js";

async function listClusterNodes(ctx: ControlContext): Promise<WireListNodesResponse> {
  const membership = ctx.membership();
  if (!membership) return { nodes: [selfNodeToWire(ctx)] };
  const [nodes, disks] = await Promise.all([membership.nodes(), listDiskReports(membership)]);
  return { nodes: nodes.map((n) => clusterNodeToWire(n, disks.get(n.nodeId))) };
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
