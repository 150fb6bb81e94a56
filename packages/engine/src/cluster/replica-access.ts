import { KeelsonError } from "@keelson/sdk";
import { epochAndHolder } from "./epochs.js";
import type { ClusterMembership } from "./membership.js";

/** Who opened a replica connection, as the replica server knows it. */
export interface ReplicaPeer {
  /** The node id its certificate names (mutual TLS under the cluster CA), or null without TLS. */
  certifiedNode: string | null;
  /** Its IP address (the connection's remote address). */
  address: string;
}

/** What a peer may do with a replica: the epoch's holder writes, any other node of the cluster reads (a reader's frontend). */
export type ReplicaAccessMode = "write" | "read";

/** `::ffff:10.0.0.1` and `10.0.0.1` are one address. */
function plainAddress(address: string): string {
  return address.startsWith("::ffff:") ? address.slice(7) : address;
}

function hostOf(hostPort: string): string {
  const at = hostPort.lastIndexOf(":");
  return (at < 0 ? hostPort : hostPort.slice(0, at)).replace(/^\[|\]$/g, "");
}

/**
 * Decides what `peer` may do with this node's replica of `volume` opened at
 * `epoch`. The authority is etcd, never the client: the epoch must be the
 * volume's current one there (EPOCH_STALE otherwise: a client cannot name an
 * epoch of its own, so it cannot fence the volume's writer out), and only the
 * node recorded as having taken it writes. The peer is the node its
 * certificate names; without TLS, the node whose storage address it connects
 * from. PERMISSION_DENIED when it is no node of the cluster, UNAVAILABLE while
 * etcd cannot be asked.
 */
export async function replicaAccess(
  m: ClusterMembership,
  volume: string,
  epoch: number,
  peer: ReplicaPeer,
): Promise<ReplicaAccessMode> {
  const current = await epochAndHolder(m.metadata, volume);
  if (epoch !== current.epoch) {
    throw new KeelsonError({
      code: "EPOCH_STALE",
      message: `volume ${volume}: epoch ${epoch} is not its current epoch (${current.epoch}); epochs come from the cluster`,
    });
  }
  const peerNodes = await nodesOf(m, peer, `replica of ${volume}`);
  return current.holder !== null && peerNodes.includes(current.holder) ? "write" : "read";
}

/**
 * The nodes of the cluster `peer` may be: the one its certificate names, or (without TLS) those whose
 * storage address it connects from. PERMISSION_DENIED when none: only engines use the replica protocol.
 */
export async function nodesOf(m: ClusterMembership, peer: ReplicaPeer, what: string): Promise<string[]> {
  const nodes = await m.nodes();
  let peerNodes: string[];
  if (peer.certifiedNode !== null) {
    peerNodes = nodes.some((n) => n.nodeId === peer.certifiedNode) ? [peer.certifiedNode] : [];
  } else {
    const from = plainAddress(peer.address);
    peerNodes = nodes
      .filter((n) => n.storageAddress === from || (n.replicaAddress !== undefined && hostOf(n.replicaAddress) === from))
      .map((n) => n.nodeId);
  }
  if (peerNodes.length === 0) {
    const who = peer.certifiedNode ?? plainAddress(peer.address);
    throw new KeelsonError({
      code: "PERMISSION_DENIED",
      message: `${what}: ${who} is no node of this cluster; only engines use the replica protocol`,
    });
  }
  return peerNodes;
}
