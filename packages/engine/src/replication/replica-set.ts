import createDebug from "debug";
import { messageOf } from "../util/errors.js";
import type { ReplicaIo } from "./local-replica.js";
import { RegionMap, regionsOf } from "./region-map.js";

const debug = createDebug("keelson:replication");

/** Where one replica of a volume lives. */
export interface ReplicaTarget {
  nodeId: string;
  /** `host:port` of the replica node's replica protocol listener (its storage address). */
  replicaAddress: string;
}

/** A replica's state as the frontend sees it. */
export type ReplicaState = "healthy" | "faulted" | "rebuilding";

/** One replica as the frontend sees it. */
export interface ReplicaStatus {
  nodeId: string;
  state: ReplicaState;
  /** Why it was faulted, and when. */
  reason: string;
  faultedAtMs: number;
  /** While rebuilding: bytes copied so far and in all (a full rebuild copies the whole volume). */
  rebuiltBytes: number;
  rebuildTotalBytes: number;
  /** The rebuild copies every region (nothing is known of what the replica missed). */
  fullRebuild: boolean;
  /** The last finished rebuild: bytes copied and how long it took. */
  lastRebuild: { bytes: number; ms: number; full: boolean } | null;
}

/** A volume's state from its replicas': `degraded` while one is faulted, `rebuilding` while none is and one is being rebuilt. */
export function volumeState(replicas: readonly { state: ReplicaState }[]): "healthy" | "degraded" | "rebuilding" | "faulted" {
  const count = (state: ReplicaState) => replicas.filter((r) => r.state === state).length;
  if (count("healthy") === 0) return "faulted";
  if (count("faulted") > 0) return "degraded";
  return count("rebuilding") > 0 ? "rebuilding" : "healthy";
}

/** What a connected replica was sent since its last flush: a kill -9 of its engine may lose those regions. */
export interface UnflushedWrites {
  /** Regions written since the last flush was sent. */
  unflushed: Set<number>;
  /** Those of flushes still in flight, one set per flush. */
  flushing: Set<Set<number>>;
}

/** Serves reads and takes every write. */
export interface HealthyReplica {
  readonly state: "healthy";
  readonly client: ReplicaIo;
  readonly writes: UnflushedWrites;
}

/** Out of the I/O path; tried again by the repair pass. */
export interface FaultedReplica {
  readonly state: "faulted";
  reason: string;
  readonly faultedAtMs: number;
  /** Regions it may lack; null when unknown (its rebuild must copy every region). */
  missing: RegionMap | null;
}

/** Takes every write while the regions it may lack are copied to it; serves no reads. */
export interface RebuildingReplica {
  readonly state: "rebuilding";
  readonly client: ReplicaIo;
  readonly writes: UnflushedWrites;
  readonly reason: string;
  readonly faultedAtMs: number;
  /** What this rebuild sets out to copy; null when every region (a full rebuild). */
  readonly missing: RegionMap | null;
  readonly full: boolean;
  copiedBytes: number;
  totalBytes: number;
}

/** A replica's state machine: each state holds only what it needs (a client exactly while connected). */
export type ReplicaCondition = HealthyReplica | FaultedReplica | RebuildingReplica;

/** A replica a write is sent to, with the client it is sent through. */
export interface WriteTarget {
  readonly replica: Replica;
  readonly client: ReplicaIo;
}

/** One replica of the volume, in whatever state. */
export interface Replica {
  readonly nodeId: string;
  is: ReplicaCondition;
  /**
   * What its status shows once the state that set it was left: the last
   * fault's time and the last rebuild's progress (a healthy replica shows
   * the rebuild that made it healthy).
   */
  readonly shown: { faultedAtMs: number; rebuiltBytes: number; rebuildTotalBytes: number; fullRebuild: boolean };
  lastRebuild: { bytes: number; ms: number; full: boolean } | null;
  /** A reconnect or rebuild is under way. */
  busy: boolean;
  /** etcd lists it in sync: it must be recorded out of sync before a write it missed is acknowledged. */
  inRecord: boolean;
  /** In sync but may differ from the source in what the previous frontend left half-written; being made equal. */
  resyncing: boolean;
}

function noWrites(): UnflushedWrites {
  return { unflushed: new Set(), flushing: new Set() };
}

/** A replica not (yet) connected: faulted, nothing known of what it lacks. */
export function newReplica(nodeId: string, reason: string, faultedAtMs: number): Replica {
  return {
    nodeId,
    is: { state: "faulted", reason, faultedAtMs, missing: null },
    shown: { faultedAtMs, rebuiltBytes: 0, rebuildTotalBytes: 0, fullRebuild: false },
    lastRebuild: null,
    busy: false,
    inRecord: false,
    resyncing: false,
  };
}

/** `r` connected through `client` and serving. */
export function setHealthy(r: Replica, client: ReplicaIo): void {
  r.is = { state: "healthy", client, writes: noWrites() };
}

/** `r` connected through `client`, to take every write while `missing` (null: everything) is copied to it. */
export function setRebuilding(
  r: Replica,
  client: ReplicaIo,
  since: { reason: string; faultedAtMs: number; missing: RegionMap | null },
  totalBytes: number,
): RebuildingReplica {
  const is: RebuildingReplica = {
    state: "rebuilding",
    client,
    writes: noWrites(),
    reason: since.reason,
    faultedAtMs: since.faultedAtMs,
    missing: since.missing,
    full: since.missing === null,
    copiedBytes: 0,
    totalBytes,
  };
  r.is = is;
  return is;
}

/** A rebuilt replica serves again; its status keeps showing the rebuild. */
export function setRebuilt(r: Replica, from: RebuildingReplica): void {
  keepShown(r, from);
  r.is = { state: "healthy", client: from.client, writes: from.writes };
}

/** The progress of a rebuild that ends (done or cut short), kept for the status. */
function keepShown(r: Replica, from: RebuildingReplica): void {
  r.shown.faultedAtMs = from.faultedAtMs;
  r.shown.rebuiltBytes = from.copiedBytes;
  r.shown.rebuildTotalBytes = from.totalBytes;
  r.shown.fullRebuild = from.full;
}

/** The replica's status now. */
export function replicaStatus(r: Replica): ReplicaStatus {
  const is = r.is;
  const base = { nodeId: r.nodeId, state: is.state, lastRebuild: r.lastRebuild };
  const { rebuiltBytes, rebuildTotalBytes, fullRebuild } = r.shown;
  if (is.state === "healthy")
    return { ...base, reason: "", faultedAtMs: r.shown.faultedAtMs, rebuiltBytes, rebuildTotalBytes, fullRebuild };
  if (is.state === "faulted")
    return { ...base, reason: is.reason, faultedAtMs: is.faultedAtMs, rebuiltBytes, rebuildTotalBytes, fullRebuild };
  return {
    ...base,
    reason: is.reason,
    faultedAtMs: is.faultedAtMs,
    rebuiltBytes: is.copiedBytes,
    rebuildTotalBytes: is.totalBytes,
    fullRebuild: is.full,
  };
}

/** What a write's {@link ReplicaSet.beforeSend} returns: no regions to let go. */
const NOTHING_FLUSHING: ReadonlyMap<Replica, Set<number>> = new Map();

/**
 * The replicas of one attached volume and their states: which take writes,
 * which serve reads, and what a faulted one may lack. The volume decides
 * when a replica is faulted; this keeps what that implies.
 */
export class ReplicaSet {
  readonly #name: string;
  readonly #epoch: number;
  /** The volume's size now (it grows with ResizeVolume): what a new map of missing regions covers. */
  #sizeBytes: number;
  readonly #readOnly: boolean;
  readonly list: Replica[];
  /** Faulted replicas not yet recorded out of sync in etcd; nothing is acknowledged while any is. */
  readonly unrecorded = new Set<string>();
  /** Longest time a write waited on a replica that then faulted (ms): the stall a replica loss causes. */
  maxStallMs = 0;

  constructor(volume: { name: string; epoch: number; sizeBytes: number; readOnly: boolean }, replicas: Replica[]) {
    this.#name = volume.name;
    this.#epoch = volume.epoch;
    this.#sizeBytes = volume.sizeBytes;
    this.#readOnly = volume.readOnly;
    this.list = replicas;
  }

  /**
   * The volume grew to `sizeBytes` (every replica did first): what a faulted
   * replica misses from now on may lie past the old end, so its map of
   * missing regions is widened to cover it.
   */
  grow(sizeBytes: number): void {
    this.#sizeBytes = sizeBytes;
    for (const r of this.list) {
      if (r.is.state === "faulted" && r.is.missing !== null) r.is = { ...r.is, missing: RegionMap.copy(r.is.missing, sizeBytes) };
    }
  }

  /** The healthy replicas now (each may be faulted by the time an await returns: check `is` again). */
  healthy(): Replica[] {
    return this.list.filter((r) => r.is.state === "healthy");
  }

  /** Replicas that take writes now, the healthy ones and those being rebuilt, each with its client at this moment. */
  writable(): WriteTarget[] {
    const targets: WriteTarget[] = [];
    for (const r of this.list) if (r.is.state !== "faulted") targets.push({ replica: r, client: r.is.client });
    return targets;
  }

  find(nodeId: string): Replica | undefined {
    return this.list.find((r) => r.nodeId === nodeId);
  }

  /**
   * Takes `r` out of the I/O path (closing its client) and keeps what it may
   * lack: the write that failed and every region not yet flushed on it; for
   * a rebuild cut short, also everything the rebuild set out to copy
   * (unknown when it copied all: a full one). Already faulted: only adds the
   * range it missed.
   */
  fault(r: Replica, error: unknown, waitedMs: number, range: { offset: number; length: number } | null): void {
    const was = r.is;
    if (was.state === "faulted") {
      if (range) was.missing?.addRange(range.offset, range.length);
      return;
    }
    const reason = messageOf(error);
    const faultedAtMs = Date.now();
    was.client.close();
    debug("volume %s epoch %d: replica on %s faulted: %s", this.#name, this.#epoch, r.nodeId, reason);
    if (r.inRecord && !this.#readOnly) this.unrecorded.add(r.nodeId);
    if (was.state === "rebuilding") keepShown(r, was);
    r.shown.faultedAtMs = faultedAtMs;
    let missing: RegionMap;
    if (was.state === "healthy") missing = new RegionMap(this.#sizeBytes);
    else if (was.missing !== null) missing = RegionMap.copy(was.missing, this.#sizeBytes);
    else {
      r.is = { state: "faulted", reason, faultedAtMs, missing: null };
      return;
    }
    if (range) missing.addRange(range.offset, range.length);
    for (const region of was.writes.unflushed) missing.add(region);
    for (const gen of was.writes.flushing) for (const region of gen) missing.add(region);
    r.is = { state: "faulted", reason, faultedAtMs, missing };
    if (was.state === "healthy") this.maxStallMs = Math.max(this.maxStallMs, waitedMs);
  }

  /**
   * Before a write (`range`) or a flush (null) is sent: a faulted replica
   * adds the range to what it lacks, a connected one to what it holds
   * unflushed. For a flush, returns each connected replica's regions that
   * the flush covers (to be let go with {@link flushed}).
   */
  beforeSend(range: { offset: number; length: number } | null): ReadonlyMap<Replica, Set<number>> {
    if (range) {
      for (const r of this.list) {
        const is = r.is;
        if (is.state === "faulted") {
          is.missing?.addRange(range.offset, range.length);
        } else {
          const { first, last } = regionsOf(range.offset, range.length);
          for (let region = first; region <= last; region++) is.writes.unflushed.add(region);
        }
      }
      // A write lets nothing go: one shared empty map rather than one per request.
      return NOTHING_FLUSHING;
    }
    const flushing = new Map<Replica, Set<number>>();
    for (const r of this.list) {
      const is = r.is;
      if (is.state === "faulted") continue;
      flushing.set(r, is.writes.unflushed);
      is.writes.flushing.add(is.writes.unflushed);
      is.writes.unflushed = new Set();
    }
    return flushing;
  }

  /** A flush sent to `r` returned: its regions are no longer at risk (nothing to do once `r` faulted). */
  flushed(r: Replica, regions: Set<number> | undefined): void {
    if (regions && r.is.state !== "faulted") r.is.writes.flushing.delete(regions);
  }

  /** Adds replicas the leader placed (a lost one replaced) and drops faulted ones it removed. */
  follow(wanted: readonly string[]): void {
    for (const nodeId of wanted) {
      if (!this.list.some((r) => r.nodeId === nodeId)) {
        this.list.push(newReplica(nodeId, "placed by the leader to replace a lost replica", Date.now()));
        debug("volume %s: new replica on %s", this.#name, nodeId);
      }
    }
    for (let i = this.list.length - 1; i >= 0; i--) {
      const r = this.list[i] as Replica;
      if (r.is.state === "faulted" && !r.busy && !wanted.includes(r.nodeId)) {
        this.list.splice(i, 1);
        this.unrecorded.delete(r.nodeId);
      }
    }
  }

  /** Closes every connected replica's client. */
  closeAll(): void {
    for (const r of this.list) if (r.is.state !== "faulted") r.is.client.close();
  }
}
