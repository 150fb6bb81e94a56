import type { ChannelCredentials } from "@grpc/grpc-js";
import { createClient, type KeelsonClient } from "@keelson/sdk";

/** A peer as the dialer needs it (a cluster node is one): where its control API listens, `host:port`. */
export interface PeerAddress {
  controlAddress: string;
}

/** Deadline of the calls a node makes to its peers unless the caller sets one. */
export const PEER_CALL_TIMEOUT_MS = 5_000;

/**
 * How this engine reaches its peers' control APIs: plaintext unless the cluster runs on mutual TLS, when every
 * call presents this engine's own certificate and checks the peer's against the cluster CA. Built once at start
 * and carried by the membership, so whoever calls a peer uses the same credentials.
 */
export class PeerDialer {
  /** The engine's TLS credentials for peer calls; undefined: plaintext. */
  readonly #credentials: ChannelCredentials | undefined;

  constructor(credentials?: ChannelCredentials) {
    this.#credentials = credentials;
  }

  /** Runs `use` with a client of `node`'s control API (one attempt: the caller decides what a failure means). */
  async withPeer<T>(node: PeerAddress, use: (c: KeelsonClient) => Promise<T>, timeoutMs = PEER_CALL_TIMEOUT_MS): Promise<T> {
    const client = createClient({
      address: node.controlAddress,
      defaultTimeoutMs: timeoutMs,
      maxAttempts: 1,
      ...(this.#credentials ? { credentials: this.#credentials } : {}),
    });
    try {
      return await use(client);
    } finally {
      client.close();
    }
  }
}
