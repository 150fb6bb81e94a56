import { isKeelsonError, KeelsonError } from "@keelson/sdk";
import createDebug from "debug";
import {
  type EtcdClientTls,
  EtcdMetadataStore,
  type MetadataStore,
  type NodeRecord,
  type Registration,
  refs,
} from "../metadata/index.js";
import type { ReplicaDial } from "../replication/replica-client.js";
import { messageOf } from "../util/errors.js";
import type { Logger } from "../util/log.js";
import type { PeerDialer } from "./peer-dialer.js";

const debug = createDebug("keelson:cluster");

/** Seconds a node stays alive in etcd without a keepalive (its lease's TTL). */
export const DEFAULT_LEASE_TTL_S = 5;

export type { NodeRecord };

/** A node as the cluster sees it now. */
export interface ClusterNode extends NodeRecord {
  /** Its liveness lease is held (the node process is up and reaches etcd). */
  alive: boolean;
  leader: boolean;
}

/** Options of {@link joinCluster}. */
export interface JoinOptions {
  /** etcd client URLs, comma-separated. */
  endpoints: string;
  /** This node's certificate for an etcd on TLS with client-certificate auth; none: plaintext. */
  etcdTls?: EtcdClientTls;
  node: Omit<NodeRecord, "registeredAtMs" | "state" | "stateSinceMs">;
  leaseTtlS?: number;
  /** Called when this node becomes leader (and with false when it stops being it). */
  onLeadership?: (leader: boolean) => void;
  /** Where lease losses and failed rejoins are reported (an operator needs to see a node flap). */
  log?: Logger;
  /** How this node calls its peers (with its TLS credentials when the cluster runs on TLS). */
  peers: PeerDialer;
  /** How this node's frontends open replicas on its peers (mutual TLS, the storage address to connect from). */
  replicaDial?: ReplicaDial;
  /** How long {@link ClusterMembership.join} keeps trying while etcd cannot be reached (default {@link DEFAULT_JOIN_TIMEOUT_MS}). */
  joinTimeoutMs?: number;
}

function unavailable(message: string, cause: unknown): KeelsonError {
  // A corrupt record is no outage: it keeps its code (and names its key).
  if (isKeelsonError(cause, "METADATA_CORRUPT")) return cause;
  return new KeelsonError({ code: "UNAVAILABLE", message: `${message}: ${messageOf(cause)}`, cause });
}

/** Delay before trying to take a lost lease again (a partition, an etcd restart). */
const REJOIN_DELAY_MS = 1000;

/**
 * How long a starting node keeps trying to join while etcd cannot be reached: etcd starting at the
 * same time as the node (a reboot), or answering slowly under load, is no reason to fail the start.
 */
export const DEFAULT_JOIN_TIMEOUT_MS = 30_000;
const JOIN_RETRY_FIRST_MS = 250;
const JOIN_RETRY_MAX_MS = 2_000;

/**
 * This node's place in the cluster: its record and liveness lease in etcd,
 * and its candidacy for leader. When the lease is lost (partition, etcd
 * restart) the node keeps trying to take a new one and stands again. Close it
 * to leave (the lease is revoked, so others see the node go at once rather
 * than after the TTL).
 */
export class ClusterMembership implements AsyncDisposable {
  /** The cluster's metadata, through which every record is read and written. */
  readonly metadata: MetadataStore;
  readonly nodeId: string;
  /** etcd client URLs joined. */
  readonly endpoints: string;
  /** How this node calls its peers' control APIs. */
  readonly peers: PeerDialer;
  /** How this node's frontends open replicas on its peers. */
  readonly replicaDial: ReplicaDial;
  readonly #options: JoinOptions;
  /** This node's liveness lease and candidacy; null until registered. */
  #registration: Registration | null = null;
  #leader = false;
  #closed = false;
  #rejoinTimer: NodeJS.Timeout | null = null;

  private constructor(metadata: MetadataStore, options: JoinOptions) {
    this.metadata = metadata;
    this.endpoints = options.endpoints;
    this.nodeId = options.node.nodeId;
    this.peers = options.peers;
    this.replicaDial = options.replicaDial ?? {};
    this.#options = options;
  }

  /** True while this node holds the leader election. */
  get isLeader(): boolean {
    return this.#leader;
  }

  /**
   * Registers the node, takes its liveness lease and stands for leader. While etcd cannot be reached
   * it tries again (backing off) for up to `joinTimeoutMs`, then fails UNAVAILABLE; any other
   * failure (a corrupt record) fails at once.
   */
  static async join(options: JoinOptions): Promise<ClusterMembership> {
    const metadata = EtcdMetadataStore.connect(options.endpoints, options.etcdTls);
    const m = new ClusterMembership(metadata, options);
    const giveUpAt = Date.now() + (options.joinTimeoutMs ?? DEFAULT_JOIN_TIMEOUT_MS);
    let delayMs = JOIN_RETRY_FIRST_MS;
    for (let attempt = 1; ; attempt++) {
      try {
        const now = Date.now();
        const record: NodeRecord = { ...options.node, registeredAtMs: now, state: "up", stateSinceMs: now };
        await metadata.put(refs.node(options.node.nodeId), record);
        await m.#register();
        return m;
      } catch (error) {
        const failure = unavailable(`cannot join the cluster at ${options.endpoints}`, error);
        if (failure.code !== "UNAVAILABLE" || Date.now() + delayMs >= giveUpAt) {
          metadata.close();
          throw failure;
        }
        options.log?.log("warn", "cannot reach etcd yet; trying again", { node: m.nodeId, attempt, error: failure.message });
        await new Promise((resolve) => setTimeout(resolve, delayMs));
        delayMs = Math.min(delayMs * 2, JOIN_RETRY_MAX_MS);
      }
    }
  }

  /** Takes a liveness lease, puts the alive key and stands for leader. */
  async #register(): Promise<void> {
    const ttl = this.#options.leaseTtlS ?? DEFAULT_LEASE_TTL_S;
    this.#registration = await this.metadata.register(this.nodeId, ttl, {
      lost: (error) => {
        this.#options.log?.log("warn", "liveness lease lost; taking a new one", { node: this.nodeId, error: String(error) });
        this.#setLeader(false);
        this.#rejoinLater();
      },
      elected: () => this.#setLeader(true),
      keepaliveFailed: (error) => {
        this.#options.log?.log("warn", "liveness lease keepalive failed; retrying", { node: this.nodeId, error: String(error) });
      },
      campaignFailed: (error) => {
        debug("node %s campaign failed: %s", this.nodeId, String(error));
        this.#setLeader(false);
        this.#rejoinLater();
      },
    });
  }

  #setLeader(leader: boolean): void {
    if (this.#leader === leader) return;
    this.#leader = leader;
    debug("node %s leader=%s", this.nodeId, leader);
    this.#options.onLeadership?.(leader);
  }

  #rejoinLater(): void {
    if (this.#closed || this.#rejoinTimer) return;
    this.#rejoinTimer = setTimeout(() => {
      this.#rejoinTimer = null;
      if (this.#closed) return;
      void this.#registration?.release();
      this.#register().catch((error: unknown) => {
        this.#options.log?.log("warn", "rejoin failed; trying again", { node: this.nodeId, error: String(error) });
        this.#rejoinLater();
      });
    }, REJOIN_DELAY_MS);
  }

  /** Every registered node, with liveness and leadership now; UNAVAILABLE while etcd cannot be reached. */
  async nodes(): Promise<ClusterNode[]> {
    try {
      return await listNodes(this.metadata);
    } catch (error) {
      throw unavailable(`cluster metadata (etcd at ${this.endpoints}) cannot be read`, error);
    }
  }

  /** Leaves the cluster: resigns, revokes the lease (the node shows down at once) and closes the client. Idempotent. */
  async close(): Promise<void> {
    if (this.#closed) return;
    this.#closed = true;
    if (this.#rejoinTimer) clearTimeout(this.#rejoinTimer);
    this.#setLeader(false);
    await this.#registration?.release();
    this.metadata.close();
  }

  async [Symbol.asyncDispose](): Promise<void> {
    await this.close();
  }
}

/** Every registered node with its liveness and whether it leads, from one store. */
export async function listNodes(metadata: MetadataStore): Promise<ClusterNode[]> {
  const [records, alive, leader] = await Promise.all([metadata.list("node"), metadata.list("alive"), metadata.leader()]);
  const aliveIds = new Set(alive.map((a) => a.ref.id));
  return records
    .map(({ value: r }) => ({ ...r, alive: aliveIds.has(r.nodeId), leader: r.nodeId === leader }))
    .sort((a, b) => (a.nodeId < b.nodeId ? -1 : 1));
}

/** Records a node's state as observed by the leader (the reconciler's first duty). */
export async function recordNodeState(metadata: MetadataStore, nodeId: string, state: "up" | "down"): Promise<void> {
  const current = await metadata.get(refs.node(nodeId));
  if (!current) return;
  if (current.value.state === state) return;
  await metadata.put(refs.node(nodeId), { ...current.value, state, stateSinceMs: Date.now() });
}
