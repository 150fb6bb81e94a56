import { KeelsonError } from "@keelson/sdk";
import createDebug from "debug";
import { type Campaign, Etcd3, type Lease } from "etcd3";
import type { Logger } from "../util/log.js";
import type { PeerDialer } from "./peer-dialer.js";

const debug = createDebug("keelson:cluster");

/** Where cluster metadata lives in etcd. */
export const KEY_PREFIX = "/keelson/v1";
const NODES = `${KEY_PREFIX}/nodes/`;
const ALIVE = `${KEY_PREFIX}/alive/`;
const LEADER = `${KEY_PREFIX}/leader`;
/** Seconds a node stays alive in etcd without a keepalive (its lease's TTL). */
export const DEFAULT_LEASE_TTL_S = 5;

/** A node as registered in etcd (kept after it dies, so the cluster knows it is down). */
export interface NodeRecord {
  nodeId: string;
  /** Control API, `host:port`. */
  controlAddress: string;
  /** NBD endpoint, `host:port`. */
  nbdAddress: string;
  /** Address for replica (storage) traffic; the control address's host when not set apart. */
  storageAddress: string;
  /** Topology label used to spread replicas. */
  zone: string;
  version: string;
  registeredAtMs: number;
  /** Set by the leader's reconciler from the node's liveness lease. */
  state: "up" | "down";
  stateSinceMs: number;
}

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
  node: Omit<NodeRecord, "registeredAtMs" | "state" | "stateSinceMs">;
  leaseTtlS?: number;
  /** Called when this node becomes leader (and with false when it stops being it). */
  onLeadership?: (leader: boolean) => void;
  /** Where lease losses and failed rejoins are reported (an operator needs to see a node flap). */
  log?: Logger;
  /** How this node calls its peers (with its TLS credentials when the cluster runs on TLS). */
  peers: PeerDialer;
}

function unavailable(message: string, cause: unknown): KeelsonError {
  return new KeelsonError({ code: "UNAVAILABLE", message: `${message}: ${(cause as Error).message ?? String(cause)}`, cause });
}

/** Delay before trying to take a lost lease again (a partition, an etcd restart). */
const REJOIN_DELAY_MS = 1000;

/**
 * This node's place in the cluster: its record and liveness lease in etcd,
 * and its candidacy for leader. When the lease is lost (partition, etcd
 * restart) the node keeps trying to take a new one and stands again. Close it
 * to leave (the lease is revoked, so others see the node go at once rather
 * than after the TTL).
 */
export class ClusterMembership implements AsyncDisposable {
  readonly client: Etcd3;
  readonly nodeId: string;
  /** etcd client URLs joined. */
  readonly endpoints: string;
  /** How this node calls its peers' control APIs. */
  readonly peers: PeerDialer;
  readonly #options: JoinOptions;
  #lease: Lease | null = null;
  #campaign: Campaign | null = null;
  #leader = false;
  #closed = false;
  #rejoinTimer: NodeJS.Timeout | null = null;

  private constructor(client: Etcd3, options: JoinOptions) {
    this.client = client;
    this.endpoints = options.endpoints;
    this.nodeId = options.node.nodeId;
    this.peers = options.peers;
    this.#options = options;
  }

  /** True while this node holds the leader election. */
  get isLeader(): boolean {
    return this.#leader;
  }

  /** Registers the node, takes its liveness lease and stands for leader. */
  static async join(options: JoinOptions): Promise<ClusterMembership> {
    const client = new Etcd3({ hosts: options.endpoints.split(","), dialTimeout: 3000 });
    const m = new ClusterMembership(client, options);
    try {
      const now = Date.now();
      const record: NodeRecord = { ...options.node, registeredAtMs: now, state: "up", stateSinceMs: now };
      await client.put(`${NODES}${options.node.nodeId}`).value(JSON.stringify(record));
      await m.#register();
      return m;
    } catch (error) {
      client.close();
      throw unavailable(`cannot join the cluster at ${options.endpoints}`, error);
    }
  }

  /** Takes a liveness lease, puts the alive key and stands for leader. */
  async #register(): Promise<void> {
    const ttl = this.#options.leaseTtlS ?? DEFAULT_LEASE_TTL_S;
    const lease = this.client.lease(ttl, { autoKeepAlive: true });
    this.#lease = lease;
    await lease.put(`${ALIVE}${this.nodeId}`).value(String(Date.now()));
    lease.on("lost", (error) => {
      this.#options.log?.log("warn", "liveness lease lost; taking a new one", { node: this.nodeId, error: String(error) });
      this.#setLeader(false);
      this.#rejoinLater();
    });
    const campaign = this.client.election(LEADER, ttl).campaign(this.nodeId);
    this.#campaign = campaign;
    campaign.on("elected", () => this.#setLeader(true));
    campaign.on("error", (error) => {
      debug("node %s campaign failed: %s", this.nodeId, String(error));
      this.#setLeader(false);
      this.#rejoinLater();
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
      void this.#campaign?.resign().catch(() => undefined);
      void this.#lease?.revoke().catch(() => undefined);
      this.#register().catch((error: unknown) => {
        this.#options.log?.log("warn", "rejoin failed; trying again", { node: this.nodeId, error: String(error) });
        this.#rejoinLater();
      });
    }, REJOIN_DELAY_MS);
  }

  /** Every registered node, with liveness and leadership now; UNAVAILABLE while etcd cannot be reached. */
  async nodes(): Promise<ClusterNode[]> {
    try {
      return await listNodes(this.client);
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
    await this.#campaign?.resign().catch(() => undefined);
    await this.#lease?.revoke().catch(() => undefined);
    this.client.close();
  }

  async [Symbol.asyncDispose](): Promise<void> {
    await this.close();
  }
}

/** Every registered node with its liveness and whether it leads, from one etcd. */
export async function listNodes(client: Etcd3): Promise<ClusterNode[]> {
  const [records, alive, leader] = await Promise.all([
    client.getAll().prefix(NODES).strings(),
    client.getAll().prefix(ALIVE).keys(),
    client
      .election(LEADER)
      .leader()
      .catch(() => undefined),
  ]);
  const aliveIds = new Set(alive.map((k) => k.slice(ALIVE.length)));
  return Object.values(records)
    .map((json) => JSON.parse(json) as NodeRecord)
    .map((r) => ({ ...r, alive: aliveIds.has(r.nodeId), leader: r.nodeId === leader }))
    .sort((a, b) => (a.nodeId < b.nodeId ? -1 : 1));
}

/** Records a node's state as observed by the leader (the reconciler's first duty). */
export async function recordNodeState(client: Etcd3, nodeId: string, state: "up" | "down"): Promise<void> {
  const key = `${NODES}${nodeId}`;
  const json = await client.get(key).string();
  if (!json) return;
  const record = JSON.parse(json) as NodeRecord;
  if (record.state === state) return;
  await client.put(key).value(JSON.stringify({ ...record, state, stateSinceMs: Date.now() }));
}

export const CLUSTER_KEYS = { NODES, ALIVE, LEADER } as const;
