import assert from "node:assert";
import { KeelsonError } from "@keelson/sdk";
import type { MetadataStore } from "../metadata/index.js";
import { messageOf } from "../util/errors.js";
import type { Logger } from "../util/log.js";
import { epochAndHolder } from "./epochs.js";

/** Who opened a replica connection (or called FenceVolume), as this node knows it. */
export interface ReplicaPeer {
  /** The node id its certificate names (mutual TLS under the cluster CA), or null without TLS. */
  certifiedNode: string | null;
  /** Its IP address (the connection's remote address). */
  address: string;
}

/** What a peer may do with a replica: the epoch's holder writes, any other node of the cluster reads (a reader's frontend). */
export type ReplicaAccessMode = "write" | "read";

/**
 * Longest a replica open waits for etcd (the epoch's holder, the cluster's nodes). Short: an attach opens
 * every replica at once and must not wait out etcd's call deadline on a node cut from etcd; such an open
 * is decided from the fence instead (see {@link ReplicaAccess.grant}).
 */
export const ACCESS_LOOKUP_TIMEOUT_MS = 1_500;
/** A lookup of the cluster's nodes that found no match is not repeated sooner (a stranger cannot make a node hammer etcd). */
const DIRECTORY_MIN_REFRESH_MS = 1_000;
/** The cluster's nodes as last read are read again, in the background, once they are this old. */
const DIRECTORY_MAX_AGE_MS = 60_000;
/** Holders of (volume, epoch) kept: each is final once etcd has it, so only the bound makes one go. */
const MAX_CACHED_HOLDERS = 16_384;

/** `::ffff:10.0.0.1` and `10.0.0.1` are one address. */
function plainAddress(address: string): string {
  return address.startsWith("::ffff:") ? address.slice(7) : address;
}

function hostOf(hostPort: string): string {
  const at = hostPort.lastIndexOf(":");
  return (at < 0 ? hostPort : hostPort.slice(0, at)).replace(/^\[|\]$/g, "");
}

/** The same caller: the same certified node, or (without TLS) the same address. */
function samePeer(a: ReplicaPeer, b: ReplicaPeer): boolean {
  if (a.certifiedNode !== null || b.certifiedNode !== null) return a.certifiedNode === b.certifiedNode;
  return plainAddress(a.address) === plainAddress(b.address);
}

function isUnavailable(error: unknown): boolean {
  return error instanceof KeelsonError && error.code === "UNAVAILABLE";
}

function bounded<T>(work: Promise<T>, what: string): Promise<T> {
  let timer: NodeJS.Timeout | undefined;
  const expired = new Promise<never>((_, reject) => {
    timer = setTimeout(
      () =>
        reject(
          new KeelsonError({ code: "UNAVAILABLE", message: `${what}: etcd did not answer in ${ACCESS_LOOKUP_TIMEOUT_MS} ms` }),
        ),
      ACCESS_LOOKUP_TIMEOUT_MS,
    );
  });
  return Promise.race([work, expired]).finally(() => clearTimeout(timer));
}

interface DirectoryEntry {
  nodeId: string;
  storageAddress: string;
  replicaAddress: string | undefined;
}

/**
 * Decides what a peer may do with this node's replicas. The authority is
 * etcd, never the client: a replica opens only at the epoch it was fenced at
 * (an engine's FenceVolume, which takes only epochs etcd granted) or, to read,
 * at the volume's current epoch in etcd; only the node etcd records as having
 * taken that epoch writes; and the peer must be a node of the cluster (its
 * certificate's node, or without TLS the node whose storage address it
 * connects from). What etcd said is kept (an epoch's holder never changes;
 * nodes rarely do), so an open normally asks etcd nothing: replica opens are
 * on the attach path, which must not wait on etcd (a node cut from etcd still
 * serves its replicas). When etcd cannot be asked, the node that fenced the
 * replica at that epoch may write: FenceVolume is itself an engine's call.
 */
export class ReplicaAccess {
  readonly #metadata: () => MetadataStore;
  readonly #log: Logger | undefined;
  /** (volume#epoch) -> the node that took that epoch, as etcd recorded it; null once etcd moved past it (also final). */
  readonly #holders = new Map<string, string | null>();
  readonly #holderLookups = new Map<string, Promise<string | null>>();
  /** volume -> who fenced this node's replica last, and at which epoch. */
  readonly #fencedBy = new Map<string, { epoch: number; by: ReplicaPeer }>();
  #directory: DirectoryEntry[] = [];
  /** When the cluster's nodes were last asked for (answered or not). */
  #directoryTriedAt = 0;
  #directoryLookup: Promise<DirectoryEntry[]> | null = null;

  /** `metadata` is the cluster's (it may throw UNAVAILABLE until this node has joined). */
  constructor(metadata: () => MetadataStore, log?: Logger) {
    this.#metadata = metadata;
    this.#log = log;
  }

  /**
   * Records that `by` fenced this node's replica of `volume` at `epoch`, and starts asking etcd who holds
   * that epoch (and which node `by` is), so that the frontend's opens which follow find the answers kept.
   */
  fenced(volume: string, epoch: number, by: ReplicaPeer): void {
    // The first fencer of an epoch is kept: a second fence at the same epoch changes nothing on the replica,
    // so it must not make another caller the one the fallback trusts.
    if (this.#fencedBy.get(volume)?.epoch === epoch) return;
    this.#fencedBy.set(volume, { epoch, by });
    this.#holderOf(volume, epoch).catch(() => undefined);
    this.nodesOf(by, `replica of ${volume}`).catch(() => undefined);
  }

  /** Forgets a volume (deleted from this node). */
  forget(volume: string): void {
    this.#fencedBy.delete(volume);
  }

  /**
   * What `peer` may do with this node's replica of `volume`, fenced at `fencedAt`, opened at `epoch`.
   * EPOCH_STALE for an epoch the replica was fenced past or one etcd did not grant; PERMISSION_DENIED
   * for a peer that is no node of the cluster; UNAVAILABLE while etcd cannot be asked and the fence does not decide.
   */
  async grant(volume: string, epoch: number, fencedAt: number, peer: ReplicaPeer): Promise<ReplicaAccessMode> {
    if (epoch < fencedAt) {
      throw new KeelsonError({
        code: "EPOCH_STALE",
        message: `replica ${volume} is fenced at epoch ${fencedAt}; asked at ${epoch}`,
      });
    }
    if (epoch > fencedAt) {
      // Not fenced here at that epoch: no writer opens it so (a writer fences first); a reader may, at the current epoch.
      await this.nodesOf(peer, `replica of ${volume}`);
      const current = await bounded(epochAndHolder(this.#metadata(), volume), `replica of ${volume}`);
      if (current.epoch !== epoch) {
        throw new KeelsonError({
          code: "EPOCH_STALE",
          message: `volume ${volume}: epoch ${epoch} is not its current epoch (${current.epoch}); epochs come from the cluster`,
        });
      }
      return "read";
    }
    // Both answers come from what was kept, or from etcd within the bound.
    const [nodes, held] = await Promise.allSettled([this.nodesOf(peer, `replica of ${volume}`), this.#holderOf(volume, epoch)]);
    for (const r of [nodes, held]) if (r.status === "rejected" && !isUnavailable(r.reason)) throw r.reason;
    if (held.status === "fulfilled") {
      // etcd named the epoch's holder (or said it moved past): that answer decides, never a fence.
      if (held.value === null) return "read";
      if (nodes.status === "fulfilled") return nodes.value.includes(held.value) ? "write" : "read";
      if (peer.certifiedNode !== null) return peer.certifiedNode === held.value ? "write" : "read";
      throw nodes.reason;
    }
    // etcd could not say who holds the epoch: the engine that fenced this replica at it (FenceVolume is an
    // engine's call: a node certificate under TLS) writes; anyone else waits for etcd.
    const fence = this.#fencedBy.get(volume);
    if (fence?.epoch !== epoch || !samePeer(fence.by, peer)) throw held.reason;
    if (
      nodes.status === "rejected" &&
      peer.certifiedNode === null &&
      this.#directory.length > 0 &&
      this.#match(this.#directory, peer).length === 0
    ) {
      // Known nodes were read, and this address is none of them.
      throw nodes.reason;
    }
    this.#log?.log("warn", "etcd unreachable: a replica opened for its fencer", { volume, epoch, error: messageOf(held.reason) });
    return "write";
  }

  /**
   * The nodes of the cluster `peer` may be: the one its certificate names, or (without TLS) those whose
   * storage address it connects from. PERMISSION_DENIED when none: only engines use the replica protocol.
   */
  async nodesOf(peer: ReplicaPeer, what: string): Promise<string[]> {
    let found = this.#match(this.#directory, peer);
    // A node that left, or an address given to another host, must not keep its place for good.
    if (found.length > 0 && Date.now() - this.#directoryTriedAt >= DIRECTORY_MAX_AGE_MS)
      this.#refreshDirectory(what).catch(() => undefined);
    if (found.length === 0 && (this.#directoryLookup || Date.now() - this.#directoryTriedAt >= DIRECTORY_MIN_REFRESH_MS)) {
      found = this.#match(await this.#refreshDirectory(what), peer);
    }
    if (found.length === 0) {
      const who = peer.certifiedNode ?? plainAddress(peer.address);
      throw new KeelsonError({
        code: "PERMISSION_DENIED",
        message: `${what}: ${who} is no node of this cluster; only engines use the replica protocol`,
      });
    }
    return found;
  }

  #match(directory: DirectoryEntry[], peer: ReplicaPeer): string[] {
    if (peer.certifiedNode !== null) return directory.some((n) => n.nodeId === peer.certifiedNode) ? [peer.certifiedNode] : [];
    const from = plainAddress(peer.address);
    return directory
      .filter((n) => n.storageAddress === from || (n.replicaAddress !== undefined && hostOf(n.replicaAddress) === from))
      .map((n) => n.nodeId);
  }

  #refreshDirectory(what: string): Promise<DirectoryEntry[]> {
    if (!this.#directoryLookup) this.#directoryTriedAt = Date.now();
    this.#directoryLookup ??= Promise.resolve()
      .then(() => bounded(this.#metadata().list("node"), what))
      .then((records) => {
        this.#directory = records.map(({ value: r }) => ({
          nodeId: r.nodeId,
          storageAddress: r.storageAddress,
          replicaAddress: r.replicaAddress,
        }));
        return this.#directory;
      })
      .finally(() => {
        this.#directoryLookup = null;
      });
    return this.#directoryLookup;
  }

  /** The node that took `epoch` of `volume`; null when etcd has moved past it (its holder is no longer recorded). */
  #holderOf(volume: string, epoch: number): Promise<string | null> {
    const key = `${volume}#${epoch}`;
    const kept = this.#holders.get(key);
    if (kept !== undefined) return Promise.resolve(kept);
    let lookup = this.#holderLookups.get(key);
    if (!lookup) {
      lookup = Promise.resolve()
        .then(() => bounded(epochAndHolder(this.#metadata(), volume), `replica of ${volume}`))
        .then((current) => {
          if (current.epoch < epoch) {
            // etcd never granted it (FenceVolume checks only epochs past the next one): nobody writes at it.
            throw new KeelsonError({
              code: "EPOCH_STALE",
              message: `volume ${volume}: epoch ${epoch} is past its current epoch (${current.epoch}) in etcd`,
            });
          }
          const holder = current.epoch > epoch ? null : current.holder;
          if (current.epoch > epoch || holder !== null) this.#keepHolder(key, holder);
          return holder;
        })
        .finally(() => this.#holderLookups.delete(key));
      this.#holderLookups.set(key, lookup);
    }
    return lookup;
  }

  #keepHolder(key: string, holder: string | null): void {
    if (this.#holders.size >= MAX_CACHED_HOLDERS) {
      const oldest = this.#holders.keys().next().value;
      if (oldest !== undefined) this.#holders.delete(oldest);
    }
    this.#holders.set(key, holder);
    assert(this.#holders.size <= MAX_CACHED_HOLDERS);
  }
}
