import type { ChannelCredentials } from "@grpc/grpc-js";
import { createClient, type KeelsonClient, KeelsonError } from "@keelson/sdk";
import type { ClusterMembership, ClusterNode } from "./membership.js";

/** Deadline of the calls a node makes to its peers unless the caller sets one. */
export const PEER_CALL_TIMEOUT_MS = 5_000;

/** How this engine reaches its peers' control APIs: plaintext unless the cluster runs on TLS. */
let peerCredentials: ChannelCredentials | undefined;

/** Set once at start by an engine whose cluster runs on mutual TLS (its own certificate, the cluster CA). */
export function usePeerCredentials(credentials: ChannelCredentials): void {
  peerCredentials = credentials;
}

/** Runs `use` with a client of `node`'s control API (one attempt: the caller decides what a failure means). */
export async function withPeer<T>(
  node: ClusterNode,
  use: (c: KeelsonClient) => Promise<T>,
  timeoutMs = PEER_CALL_TIMEOUT_MS,
): Promise<T> {
  const client = createClient({
    address: node.controlAddress,
    defaultTimeoutMs: timeoutMs,
    maxAttempts: 1,
    ...(peerCredentials ? { credentials: peerCredentials } : {}),
  });
  try {
    return await use(client);
  } finally {
    client.close();
  }
}

/** The cluster node `nodeId`, or NODE_NOT_FOUND. */
export async function findNode(m: ClusterMembership, nodeId: string): Promise<ClusterNode> {
  const node = (await m.nodes()).find((n) => n.nodeId === nodeId);
  if (!node) throw new KeelsonError({ code: "NODE_NOT_FOUND", message: `no cluster node ${JSON.stringify(nodeId)}` });
  return node;
}
