import { KeelsonError } from "@keelson/sdk";
import type { ClusterMembership, ClusterNode } from "./membership.js";

/** The cluster node `nodeId`, or NODE_NOT_FOUND. */
export async function findNode(m: ClusterMembership, nodeId: string): Promise<ClusterNode> {
  const node = (await m.nodes()).find((n) => n.nodeId === nodeId);
  if (!node) throw new KeelsonError({ code: "NODE_NOT_FOUND", message: `no cluster node ${JSON.stringify(nodeId)}` });
  return node;
}
