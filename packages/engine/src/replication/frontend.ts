import { KeelsonError } from "@keelson/sdk";
import createDebug from "debug";
import { ACTIVITY_EXTENT_BYTES, type ActivityExtents, ActivityLog, type SaveActivity } from "./activity-log.js";
import { LocalReplica, type OpenLocalExport, type ReplicaIo } from "./local-replica.js";
import { RangeGate } from "./range-gate.js";
import { type RebuildThrottle, UNTHROTTLED } from "./rebuild-throttle.js";
import { REGION_BYTES, RegionMap, regionsOf } from "./region-map.js";
import { ReplicaClient } from "./replica-client.js";

const debug = createDebug("keelson:replication");

/** Per-request deadline of a replica unless configured: after it, the replica is faulted and I/O goes on without it. */
export const DEFAULT_REPLICA_TIMEOUT_MS = 2_000;

/** Where one replica of a volume lives. */
export interface ReplicaTarget {
  nodeId: string;
  /** NBD `host:port` of the replica's node. */
  nbdAddress: string;
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

/** What the frontend needs from the cluster (etcd and the peers); the cluster module provides it. */
export interface FrontendHooks {
  /** Records a replica out of sync before any write it missed is acknowledged (EPOCH_STALE once superseded). */
  recordFault(nodeId: string): Promise<void>;
  /** Records a rebuilt replica in sync again. */
  recordInSync(nodeId: string): Promise<void>;
  /** Fences a returning replica at this epoch (so no older frontend writes to it) and says where it is. */
  prepareReplica(nodeId: string): Promise<ReplicaTarget>;
  /** The nodes that should hold replicas now (the leader replaces a lost one). */
  replicaSet(): Promise<readonly string[]>;
  /** Saves the activity log under this epoch (EPOCH_STALE once superseded). */
  saveActivity: SaveActivity;
}

/**
 * What a new attachment must make equal across the in-sync replicas before
 * it reads from more than one: the ranges the previous frontend's activity
 * log held (writes it may have left on some replicas only), or "all" when
 * that is not known.
 */
export type ResyncPlan = readonly { offset: number; length: number }[] | "all";

/** How a frontend is opened. */
export interface OpenOptions {
  /** Per-request deadline of each replica (ms). */
  timeoutMs?: number;
  hooks?: Partial<FrontendHooks>;
  /** What to make equal across in-sync replicas first (the volume was attached before and not detached cleanly). */
  resync?: ResyncPlan | null;
  /** Serve reads only: no epoch of its own, no activity log, no repair; writes fail with READ_ONLY. */
  readOnly?: boolean;
  /** Paces rebuild copies (shared by every frontend of the node). */
  rebuildThrottle?: RebuildThrottle;
  /** Reaches this node's own replica in-process instead of over NBD. */
  openLocal?: OpenLocalExport;
}

const NO_HOOKS: FrontendHooks = {
  recordFault: async () => undefined,
  recordInSync: async () => undefined,
  prepareReplica: async (nodeId) => {
    throw new KeelsonError({ code: "UNAVAILABLE", message: `no way to reach replica ${nodeId}` });
  },
  replicaSet: async () => [],
  saveActivity: async () => undefined,
};

/** One replica to open: where it is, and whether it holds every acknowledged write. */
export interface OpenTarget extends ReplicaTarget {
  inSync: boolean;
}

/** How often a degraded volume tries its faulted replicas again and looks for new ones. */
export const REPAIR_INTERVAL_MS = 1_000;
/** Regions a rebuild copies at once. */
const REBUILD_PARALLEL = 4;

interface Replica {
  nodeId: string;
  state: ReplicaState;
  reason: string;
  faultedAtMs: number;
  client: ReplicaIo | null;
  /** Regions it may lack; null when unknown (a full rebuild). Kept while it is not healthy. */
  missing: RegionMap | null;
  /** Regions written to it since the last flush was sent: a kill -9 of its engine may lose them. */
  unflushed: Set<number>;
  /** Those of flushes still in flight. */
  flushing: Set<Set<number>>;
  rebuiltBytes: number;
  rebuildTotalBytes: number;
  fullRebuild: boolean;
  lastRebuild: { bytes: number; ms: number; full: boolean } | null;
  /** A reconnect or rebuild is under way. */
  busy: boolean;
  /** etcd lists it in sync: it must be recorded out of sync before a write it missed is acknowledged. */
  inRecord: boolean;
  /** In sync but may differ from the source in what the previous frontend left half-written; being made equal. */
  resyncing: boolean;
}

function newReplica(nodeId: string): Replica {
  return {
    nodeId,
    state: "faulted",
    reason: "",
    faultedAtMs: 0,
    client: null,
    missing: null,
    unflushed: new Set(),
    flushing: new Set(),
    rebuiltBytes: 0,
    rebuildTotalBytes: 0,
    fullRebuild: false,
    lastRebuild: null,
    busy: false,
    inRecord: false,
    resyncing: false,
  };
}

/**
 * The frontend of a replicated volume attached on this node: every write goes
 * to every healthy replica and is acknowledged once all of them acknowledged
 * it; a replica that fails or misses its deadline is faulted and the volume
 * runs degraded on the rest. Reads go to the local replica while it is
 * healthy. All replica connections carry this attachment's epoch, so once a
 * newer attachment fences the replicas nothing more is acknowledged here.
 *
 * A faulted replica is tried again every second; once it answers it is
 * rebuilt while I/O goes on: it takes every new write, and the regions it
 * may lack are copied to it from a healthy replica (only those written since
 * it failed, or not yet flushed on it then, when this frontend saw it fail;
 * every region otherwise). Then it is recorded in sync and serves again.
 */
export class ReplicatedVolume {
  readonly name: string;
  readonly epoch: number;
  readonly sizeBytes: number;
  readonly readOnly: boolean;
  /** NBD connections open on it now. */
  openHandles = 0;
  readonly #localNodeId: string;
  readonly #replicas: Replica[];
  readonly #hooks: FrontendHooks;
  readonly #timeoutMs: number;
  readonly #gate = new RangeGate();
  readonly #activity: ActivityLog;
  #throttle: RebuildThrottle = UNTHROTTLED;
  #openLocal: OpenLocalExport | undefined;
  /** Longest time a write waited on a replica that then faulted (ms): the stall a replica loss causes. */
  maxStallMs = 0;
  /** Rebuilds finished since attach. */
  rebuildsCompleted = 0;
  #closed = false;
  /** Faulted replicas not yet recorded out of sync in etcd; nothing is acknowledged while any is. */
  readonly #unrecorded = new Set<string>();
  /** Set once etcd said a newer attachment exists: this frontend serves nothing more. */
  #fenced = false;
  #repairTimer: NodeJS.Timeout | null = null;
  #repairing = false;

  private constructor(
    name: string,
    epoch: number,
    sizeBytes: number,
    localNodeId: string,
    replicas: Replica[],
    hooks: FrontendHooks,
    timeoutMs: number,
    readOnly: boolean,
  ) {
    this.readOnly = readOnly;
    this.name = name;
    this.epoch = epoch;
    this.sizeBytes = sizeBytes;
    this.#localNodeId = localNodeId;
    this.#replicas = replicas;
    this.#hooks = hooks;
    this.#timeoutMs = timeoutMs;
    this.#activity = new ActivityLog(hooks.saveActivity);
  }

  /**
   * Connects to every in-sync replica under `epoch`; unreachable ones start
   * faulted, and replicas out of sync start faulted with nothing known of
   * what they lack (a full rebuild). With a `resync` plan (the volume was
   * attached before), one in-sync replica (the local one when it can) is the
   * source and the others are made equal to it in the planned ranges before
   * they serve reads. UNAVAILABLE when no in-sync replica answers.
   */
  static async open(
    name: string,
    epoch: number,
    targets: readonly (ReplicaTarget & { inSync?: boolean })[],
    localNodeId: string,
    options: OpenOptions = {},
  ): Promise<ReplicatedVolume> {
    const { timeoutMs = DEFAULT_REPLICA_TIMEOUT_MS, hooks = {}, resync = null, readOnly = false } = options;
    const throttle = options.rebuildThrottle ?? UNTHROTTLED;
    const replicas = await Promise.all(
      targets.map(async (target): Promise<Replica> => {
        const r = newReplica(target.nodeId);
        r.inRecord = target.inSync !== false;
        if (target.inSync === false) {
          r.reason = "out of sync at attach";
          r.faultedAtMs = Date.now();
          return r;
        }
        try {
          r.client = await connectReplica(target, `${name}#${epoch}`, localNodeId, timeoutMs, options.openLocal);
          r.state = "healthy";
        } catch (error) {
          r.reason = `unreachable at attach: ${(error as Error).message}`;
          r.faultedAtMs = Date.now();
        }
        return r;
      }),
    );
    const healthy = replicas.filter((r) => r.client);
    if (healthy.length === 0) {
      throw new KeelsonError({
        code: "UNAVAILABLE",
        message: `no in-sync replica of ${name} answers: ${replicas.map((r) => `${r.nodeId}: ${r.reason}`).join("; ")}`,
      });
    }
    const sizeBytes = Math.min(...healthy.map((r) => (r.client as ReplicaIo).sizeBytes));
    const v = new ReplicatedVolume(name, epoch, sizeBytes, localNodeId, replicas, { ...NO_HOOKS, ...hooks }, timeoutMs, readOnly);
    v.#throttle = throttle;
    v.#openLocal = options.openLocal;
    // A reader changes nothing: no log, no resync, no repair (replicas it cannot reach stay in sync for the record).
    if (readOnly) return v;
    // In sync in etcd but not reached: recorded out of sync before anything is acknowledged.
    for (const r of replicas) if (r.inRecord && !r.client) v.#unrecorded.add(r.nodeId);
    const pinned = resync === null ? null : v.#planResync(resync);
    try {
      await v.#activity.start(pinned);
    } catch (error) {
      v.close();
      throw error;
    }
    for (const r of replicas) if (r.resyncing && r.client) void v.#resync(r);
    v.#repairTimer = setInterval(() => void v.#repair(), REPAIR_INTERVAL_MS);
    v.#repairTimer.unref();
    return v;
  }

  /**
   * Picks the source and marks every other in-sync replica for a resync of
   * the planned ranges; returns the extents the activity log must keep until
   * that is done (null when there is a single in-sync replica).
   */
  #planResync(plan: ResyncPlan): ActivityExtents | null {
    const inSync = this.#replicas.filter((r) => r.inRecord);
    const up = inSync.filter((r) => r.state === "healthy");
    if (inSync.length < 2 || up.length === 0) return null;
    const source = up.find((r) => r.nodeId === this.#localNodeId) ?? (up[0] as Replica);
    let missing: RegionMap | null = null;
    const extents = new Set<number>();
    if (plan !== "all") {
      missing = new RegionMap(this.sizeBytes);
      for (const { offset, length } of plan) {
        missing.addRange(offset, length);
        const { first, last } = regionsOf(offset, length, ACTIVITY_EXTENT_BYTES);
        for (let e = first; e <= last; e++) extents.add(e);
      }
      if (missing.count === 0) return null;
    }
    for (const r of inSync) {
      if (r === source) continue;
      r.resyncing = true;
      if (r.state === "healthy") {
        r.state = "rebuilding";
        r.reason = `resync from ${source.nodeId}: the previous frontend may have left writes on some replicas only`;
        r.faultedAtMs = Date.now();
      }
      r.missing = missing === null ? null : RegionMap.copy(missing);
    }
    return plan === "all" ? "all" : [...extents].sort((a, b) => a - b);
  }

  /** Makes an in-sync replica equal to the source in the planned ranges, while it takes every write. */
  async #resync(r: Replica): Promise<void> {
    r.busy = true;
    try {
      await this.#rebuild(r, r.client as ReplicaIo);
    } finally {
      r.busy = false;
    }
  }

  /** A replica no longer needs its resync (made equal, or recorded out of sync): the log may let the plan go. */
  #resyncEnded(r: Replica): void {
    if (!r.resyncing) return;
    r.resyncing = false;
    if (!this.#replicas.some((x) => x.resyncing)) this.#activity.unpin();
  }

  /** Still serving: not closed, and not fenced by a newer attachment. */
  get serving(): boolean {
    return !this.#closed && !this.#fenced;
  }

  /** A replica is still being made equal to the source after a failover. */
  get resyncing(): boolean {
    return this.#replicas.some((r) => r.resyncing);
  }

  /**
   * Stops serving, cleanly: VOLUME_IN_USE while NBD clients are connected
   * (unless `force`); a writer flushes every replica and, when the in-sync
   * ones are known equal, clears its activity log so the next attachment has
   * nothing to resync. A frontend that cannot flush still closes; its log
   * stays and the next attachment resyncs.
   */
  async detach(force: boolean): Promise<{ clean: boolean }> {
    if (this.openHandles > 0 && !force) {
      throw new KeelsonError({
        code: "VOLUME_IN_USE",
        message: `volume ${this.name} has ${this.openHandles} NBD connection(s) on this node; disconnect them or detach with force`,
      });
    }
    let clean = false;
    if (!this.readOnly && this.serving) {
      try {
        await this.flush();
        await this.#recordFaults();
        // With clients still connected (force) a write may yet go out: the log must stay.
        if (!this.resyncing && this.openHandles === 0) {
          await this.#activity.clear();
          clean = true;
        }
      } catch (error) {
        debug("volume %s: detach not clean: %s", this.name, (error as Error).message);
      }
    }
    this.close();
    return { clean };
  }

  /**
   * Runs `fn` with every write held: the writes in flight finish first, new
   * ones wait until it is done. `fn` gets the nodes of the healthy replicas
   * (those holding every acknowledged write), e.g. to snapshot each of them
   * at the same point.
   */
  async quiesce<T>(fn: (healthyNodeIds: string[]) => Promise<T>): Promise<T> {
    if (!this.serving) throw this.#unavailable();
    const unlock = await this.#gate.lock(0, this.sizeBytes);
    try {
      return await fn(this.#healthy().map((r) => r.nodeId));
    } finally {
      unlock();
    }
  }

  /** The replicas and their state now. */
  status(): ReplicaStatus[] {
    return this.#replicas.map((r) => ({
      nodeId: r.nodeId,
      state: r.state,
      reason: r.reason,
      faultedAtMs: r.faultedAtMs,
      rebuiltBytes: r.rebuiltBytes,
      rebuildTotalBytes: r.rebuildTotalBytes,
      fullRebuild: r.fullRebuild,
      lastRebuild: r.lastRebuild,
    }));
  }

  #healthy(): Replica[] {
    return this.#replicas.filter((r) => r.state === "healthy");
  }

  /** Replicas that take writes: the healthy ones and those being rebuilt. */
  #writable(): Replica[] {
    return this.#replicas.filter((r) => r.state !== "faulted");
  }

  #fault(r: Replica, error: unknown, waitedMs: number, range: { offset: number; length: number } | null): void {
    if (r.state === "faulted") {
      if (range) r.missing?.addRange(range.offset, range.length);
      return;
    }
    const wasHealthy = r.state === "healthy";
    r.state = "faulted";
    r.reason = (error as Error).message ?? String(error);
    r.faultedAtMs = Date.now();
    r.client?.close();
    r.client = null;
    debug("volume %s epoch %d: replica on %s faulted: %s", this.name, this.epoch, r.nodeId, r.reason);
    if (r.inRecord && !this.readOnly) this.#unrecorded.add(r.nodeId);
    // What it may lack: the write that failed and every region not yet flushed on it; for a rebuild
    // cut short, also everything the rebuild set out to copy (unknown when it copied all: a full one).
    if (!wasHealthy && r.missing === null) {
      r.unflushed = new Set();
      r.flushing = new Set();
      return;
    }
    const missing = wasHealthy ? new RegionMap(this.sizeBytes) : RegionMap.copy(r.missing as RegionMap);
    if (range) missing.addRange(range.offset, range.length);
    for (const region of r.unflushed) missing.add(region);
    for (const gen of r.flushing) for (const region of gen) missing.add(region);
    r.missing = missing;
    r.unflushed = new Set();
    r.flushing = new Set();
    if (wasHealthy) this.maxStallMs = Math.max(this.maxStallMs, waitedMs);
  }

  /**
   * Records every faulted replica out of sync (in etcd, under this epoch).
   * Throws when that cannot be done, so the caller acknowledges nothing: a
   * frontend cut off from etcd must not keep acknowledging writes that only
   * its reachable replicas hold, because a newer attachment may exist.
   */
  async #recordFaults(): Promise<void> {
    for (const nodeId of [...this.#unrecorded]) {
      try {
        await this.#hooks.recordFault(nodeId);
        this.#unrecorded.delete(nodeId);
        const r = this.#replicas.find((x) => x.nodeId === nodeId);
        if (r) {
          r.inRecord = false;
          this.#resyncEnded(r);
        }
      } catch (error) {
        if (isStale(error)) this.#fenced = true;
        if (this.#fenced) throw fencedOut(this.name, this.epoch);
        throw new KeelsonError({
          code: "UNAVAILABLE",
          message: `volume ${this.name}: replica ${nodeId} faulted and cannot be recorded out of sync (${(error as Error).message}); not acknowledging`,
          cause: error,
        });
      }
    }
  }

  /**
   * Runs `op` on every healthy replica and every one being rebuilt; succeeds
   * when at least one healthy replica did, and faults the rest. `range` is
   * what a write touches (null for a flush).
   */
  async #everywhere(range: { offset: number; length: number } | null, op: (c: ReplicaIo) => Promise<unknown>): Promise<void> {
    if (this.#fenced) throw fencedOut(this.name, this.epoch);
    if (this.readOnly) {
      if (!range) return; // nothing written, nothing to flush
      throw new KeelsonError({ code: "READ_ONLY", message: `volume ${this.name} is attached read-only on this node` });
    }
    let logged: (() => void) | null = null;
    if (range) {
      // In the activity log before any replica sees it, so a failover resyncs it if it lands on some only.
      const entered = this.#activity.enter(range.offset, range.length);
      try {
        logged = entered instanceof Promise ? await entered : entered;
      } catch (error) {
        if (isStale(error)) this.#fenced = true;
        if (this.#fenced) throw fencedOut(this.name, this.epoch);
        throw new KeelsonError({
          code: "UNAVAILABLE",
          message: `volume ${this.name}: the activity log cannot be saved (${(error as Error).message}); not writing`,
          cause: error,
        });
      }
    }
    const entered = range ? this.#gate.enter(range.offset, range.length) : null;
    const leave = entered instanceof Promise ? await entered : entered;
    try {
      const targets = this.#writable();
      if (this.#closed || !targets.some((r) => r.state === "healthy")) throw this.#unavailable();
      // Marked before sending: a rebuild that starts now must see every region its replica misses.
      const flushed = new Map<Replica, Set<number>>();
      for (const r of this.#replicas) {
        if (r.state === "faulted") {
          if (range) r.missing?.addRange(range.offset, range.length);
        } else if (range) {
          const { first, last } = regionsOf(range.offset, range.length);
          for (let region = first; region <= last; region++) r.unflushed.add(region);
        } else {
          flushed.set(r, r.unflushed);
          r.flushing.add(r.unflushed);
          r.unflushed = new Set();
        }
      }
      const started = Date.now();
      const results = await Promise.allSettled(targets.map((r) => op(r.client as ReplicaIo)));
      let ok = 0;
      let stale = false;
      results.forEach((res, i) => {
        const r = targets[i] as Replica;
        if (res.status === "fulfilled") {
          if (r.state === "healthy") ok++;
        } else {
          stale ||= isStale(res.reason);
          this.#fault(r, res.reason, Date.now() - started, range);
        }
        const gen = flushed.get(r);
        if (gen) r.flushing.delete(gen);
      });
      if (stale) {
        this.#fenced = true;
        throw fencedOut(this.name, this.epoch);
      }
      if (ok === 0) throw this.#unavailable();
      // The replicas that missed this write leave the in-sync set before it is acknowledged.
      await this.#recordFaults();
    } finally {
      leave?.();
      logged?.();
    }
  }

  #unavailable(): KeelsonError {
    return new KeelsonError({
      code: "UNAVAILABLE",
      message: `volume ${this.name}: no healthy replica left (epoch ${this.epoch})`,
    });
  }

  write(offset: number, data: Buffer, fua: boolean): Promise<void> {
    return this.#everywhere({ offset, length: data.length }, (c) => c.write(offset, data, fua));
  }

  zero(offset: number, length: number, trim: boolean, noHole: boolean, fua: boolean): Promise<void> {
    return this.#everywhere({ offset, length }, (c) => c.zero(offset, length, trim, noHole, fua));
  }

  flush(): Promise<void> {
    return this.#everywhere(null, (c) => c.flush());
  }

  /** Reads from the local replica while healthy, else from the others in turn. */
  async read(offset: number, length: number): Promise<Buffer> {
    if (this.#fenced) throw fencedOut(this.name, this.epoch);
    const order = [...this.#healthy()].sort(
      (a, b) => Number(b.nodeId === this.#localNodeId) - Number(a.nodeId === this.#localNodeId),
    );
    for (const r of order) {
      const started = Date.now();
      try {
        return await (r.client as ReplicaIo).read(offset, length);
      } catch (error) {
        if (isStale(error)) {
          this.#fenced = true;
          throw fencedOut(this.name, this.epoch);
        }
        if (r.state === "healthy") this.#fault(r, error, Date.now() - started, null);
      }
    }
    throw this.#unavailable();
  }

  /** One repair pass: follow the replica set, reconnect faulted replicas and rebuild them. */
  async #repair(): Promise<void> {
    if (this.#repairing || this.#closed || this.#fenced) return;
    this.#repairing = true;
    try {
      await this.#followReplicaSet();
      for (const r of this.#replicas) {
        if (r.state === "faulted" && !r.busy) void this.#reconnectAndRebuild(r);
      }
    } finally {
      this.#repairing = false;
    }
  }

  /** Adds replicas the leader placed (a lost one replaced) and drops those it removed. */
  async #followReplicaSet(): Promise<void> {
    if (!this.#replicas.some((r) => r.state !== "healthy")) return; // nothing to replace while all are healthy
    let wanted: readonly string[];
    try {
      wanted = await this.#hooks.replicaSet();
    } catch {
      return; // etcd away: try on the next pass
    }
    if (wanted.length === 0) return;
    for (const nodeId of wanted) {
      if (!this.#replicas.some((r) => r.nodeId === nodeId)) {
        const r = newReplica(nodeId);
        r.reason = "placed by the leader to replace a lost replica";
        r.faultedAtMs = Date.now();
        this.#replicas.push(r);
        debug("volume %s: new replica on %s", this.name, nodeId);
      }
    }
    for (let i = this.#replicas.length - 1; i >= 0; i--) {
      const r = this.#replicas[i] as Replica;
      if (r.state === "faulted" && !r.busy && !wanted.includes(r.nodeId)) {
        this.#replicas.splice(i, 1);
        this.#unrecorded.delete(r.nodeId);
      }
    }
  }

  async #reconnectAndRebuild(r: Replica): Promise<void> {
    r.busy = true;
    try {
      // Its fault must be in etcd before it may count again (no write may have recorded it yet).
      if (this.#unrecorded.has(r.nodeId)) {
        try {
          await this.#recordFaults();
        } catch {
          return;
        }
      }
      let client: ReplicaIo;
      try {
        const target = await this.#hooks.prepareReplica(r.nodeId);
        client = await connectReplica(target, `${this.name}#${this.epoch}`, this.#localNodeId, this.#timeoutMs, this.#openLocal);
      } catch (error) {
        if (isStale(error)) this.#fenced = true;
        return; // still away: the next pass tries again
      }
      if (this.#closed || this.#fenced || r.state !== "faulted") {
        client.close();
        return;
      }
      if (client.sizeBytes < this.sizeBytes) {
        client.close();
        r.reason = `replica is ${client.sizeBytes} bytes, the volume ${this.sizeBytes}`;
        return;
      }
      await this.#rebuild(r, client);
    } finally {
      r.busy = false;
    }
  }

  /**
   * Copies what `r` lacks while it takes every new write, then records it in
   * sync. Each region is copied under the range gate, so no write to it is
   * in flight between the read from a healthy replica and the copy's write.
   */
  async #rebuild(r: Replica, client: ReplicaIo): Promise<void> {
    const started = Date.now();
    const full = r.missing === null;
    // From here on it takes every write (and marks nothing more missing).
    r.client = client;
    r.state = "rebuilding";
    r.fullRebuild = full;
    r.unflushed = new Set();
    r.flushing = new Set();
    const regions = full ? null : [...(r.missing as RegionMap)];
    const total = regions ? regions.length : Math.ceil(this.sizeBytes / REGION_BYTES);
    r.rebuildTotalBytes = Math.min(total * REGION_BYTES, this.sizeBytes);
    r.rebuiltBytes = 0;
    debug("volume %s: rebuilding %s (%s, %d regions)", this.name, r.nodeId, full ? "full" : "incremental", total);
    let next = 0;
    const worker = async (): Promise<void> => {
      while (next < total && r.state === "rebuilding" && !this.#closed) {
        const region = regions ? (regions[next++] as number) : next++;
        await this.#copyRegion(r, client, region);
      }
    };
    try {
      await Promise.all(Array.from({ length: REBUILD_PARALLEL }, worker));
      if (r.state !== "rebuilding" || this.#closed) return;
      await client.flush();
      await this.#hooks.recordInSync(r.nodeId);
      r.inRecord = true;
    } catch (error) {
      if (isStale(error)) this.#fenced = true;
      if (r.state === "rebuilding") this.#fault(r, error, 0, null);
      return;
    }
    if (r.state !== "rebuilding") return;
    r.state = "healthy";
    r.missing = null;
    r.reason = "";
    r.lastRebuild = { bytes: r.rebuiltBytes, ms: Date.now() - started, full };
    this.rebuildsCompleted++;
    this.#resyncEnded(r);
    debug("volume %s: replica %s rebuilt (%d bytes in %d ms)", this.name, r.nodeId, r.rebuiltBytes, Date.now() - started);
  }

  async #copyRegion(r: Replica, client: ReplicaIo, region: number): Promise<void> {
    const offset = region * REGION_BYTES;
    const length = Math.min(REGION_BYTES, this.sizeBytes - offset);
    if (length <= 0) return;
    // Paced before the gate is taken: waiting here holds no application write back.
    await this.#throttle.take(length);
    const unlock = await this.#gate.lock(offset, length);
    try {
      const data = await this.read(offset, length);
      // Holes stay holes on the new replica (it is thin too).
      if (isZero(data)) await client.zero(offset, length, true, false, false);
      else await client.write(offset, data, false);
      r.rebuiltBytes += length;
    } finally {
      unlock();
    }
  }

  /** Closes every replica connection and stops repairs. Idempotent. */
  close(): void {
    this.#closed = true;
    this.#activity.close();
    if (this.#repairTimer) clearInterval(this.#repairTimer);
    this.#repairTimer = null;
    for (const r of this.#replicas) r.client?.close();
  }
}

const ZERO_REGION = Buffer.alloc(REGION_BYTES);

/** This node's replica in-process when it can be opened so, any other over NBD. */
async function connectReplica(
  target: ReplicaTarget,
  exportName: string,
  localNodeId: string,
  timeoutMs: number,
  openLocal: OpenLocalExport | undefined,
): Promise<ReplicaIo> {
  if (openLocal && target.nodeId === localNodeId) return LocalReplica.open(openLocal, exportName);
  return ReplicaClient.connect(target.nbdAddress, exportName, timeoutMs);
}

function isZero(data: Buffer): boolean {
  return data.length <= ZERO_REGION.length && data.equals(ZERO_REGION.subarray(0, data.length));
}

function isStale(error: unknown): boolean {
  return error instanceof KeelsonError && error.code === "EPOCH_STALE";
}

function fencedOut(name: string, epoch: number): KeelsonError {
  return new KeelsonError({
    code: "EPOCH_STALE",
    message: `volume ${name}: attachment epoch ${epoch} was fenced by a newer attachment`,
  });
}
