import assert from "node:assert/strict";
import { KeelsonError } from "@keelson/sdk";
import createDebug from "debug";
import type { AllocationRun } from "../nbd/export.js";
import { encodeActivityLog, MAX_ACTIVITY_EXTENTS } from "../store/activity-record.js";
import { IoCounters } from "../store/io-counters.js";
import { messageOf } from "../util/errors.js";
import { ACTIVITY_EXTENT_BYTES, type ActivityExtents, ActivityLog, type KeptActivityLog } from "./activity-log.js";
import { LocalReplica, type OpenLocalExport, type ReplicaIo } from "./local-replica.js";
import { RangeGate } from "./range-gate.js";
import { isStale, Rebuilder, type SnapshotChain } from "./rebuild.js";
import { type RebuildThrottle, UNTHROTTLED } from "./rebuild-throttle.js";
import { ReplicaClient, type ReplicaDial } from "./replica-client.js";
import {
  newReplica,
  type Replica,
  ReplicaSet,
  type ReplicaStatus,
  type ReplicaTarget,
  replicaStatus,
  setHealthy,
  type WriteTarget,
} from "./replica-set.js";
import { planResync, type ResyncPlan } from "./resync.js";

const debug = createDebug("keelson:replication");

/** Per-request deadline of a replica unless configured: after it, the replica is faulted and I/O goes on without it. */
export const DEFAULT_REPLICA_TIMEOUT_MS = 2_000;

/** What the frontend needs from the cluster (etcd and the peers); the cluster module provides it. */
export interface FrontendHooks {
  /**
   * Records a replica out of sync before any write it missed is acknowledged
   * (EPOCH_STALE once superseded). "held": it stays in sync in the record,
   * since recording it would take the in-sync set under the write quorum; no
   * write it misses may then be acknowledged.
   */
  recordFault(nodeId: string): Promise<"recorded" | "held">;
  /** Records a rebuilt replica in sync again. */
  recordInSync(nodeId: string): Promise<void>;
  /**
   * Fences a returning replica at this epoch (so no older frontend writes to
   * it) and says where it is, with the activity log it keeps.
   */
  prepareReplica(nodeId: string): Promise<ReplicaTarget & { keptLog?: KeptActivityLog | undefined }>;
  /** The nodes that should hold replicas now (the leader replaces a lost one). */
  replicaSet(): Promise<readonly string[]>;
  /** Copies the volume's snapshots to a replica before its head is rebuilt; absent: only the head is copied. */
  snapshots?: SnapshotChain;
}

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
  /** How to dial peers' replica listeners (mutual TLS, the storage address to connect from). */
  dial?: ReplicaDial;
  /** Write quorum: in-sync replicas that must hold a write (or flush) before it is acknowledged; 1 unless given. */
  minInSync?: number;
  /** The volume's size as recorded: served even when replicas are larger (a resize cut short). */
  sizeBytes?: number;
}

const NO_HOOKS: FrontendHooks = {
  recordFault: async () => "recorded" as const,
  recordInSync: async () => undefined,
  prepareReplica: async (nodeId) => {
    throw new KeelsonError({ code: "UNAVAILABLE", message: `no way to reach replica ${nodeId}` });
  },
  replicaSet: async () => [],
};

/** One replica to open: where it is, and whether it holds every acknowledged write. */
export interface OpenTarget extends ReplicaTarget {
  inSync: boolean;
}

/** Longest a write waits for enough replicas in sync (see `minInSync`) before it fails. */
export const QUORUM_WAIT_MS = 5_000;
const QUORUM_POLL_MS = 50;

/** How often a degraded volume tries its faulted replicas again and looks for new ones. */
export const REPAIR_INTERVAL_MS = 1_000;
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
  /** The size served; it only grows (see {@link grow}). */
  #sizeBytes: number;
  readonly readOnly: boolean;
  /** NBD connections open on it now. */
  openHandles = 0;
  readonly #localNodeId: string;
  readonly #replicas: ReplicaSet;
  readonly #hooks: FrontendHooks;
  readonly #timeoutMs: number;
  readonly #gate = new RangeGate();
  readonly #activity: ActivityLog;
  readonly #throttle: RebuildThrottle;
  readonly #openLocal: OpenLocalExport | undefined;
  readonly #dial: ReplicaDial;
  readonly #rebuilder: Rebuilder;
  /** In-sync replicas a write needs before it is acknowledged. */
  readonly minInSync: number;
  /** Rebuilds finished since attach. */
  rebuildsCompleted = 0;
  /** What clients asked of the volume through its NBD exports on this node (kept by its targets; the metrics read it). */
  readonly io = new IoCounters();
  /** Activity log saves started: each replica keeps only the newest it got. */
  #activitySaves = 0;
  /** The last recording of a rebuilt replica in sync (settled): a fault is recorded only after it. */
  #recordingInSync: Promise<void> = Promise.resolve();
  #closed = false;
  /** Set once etcd said a newer attachment exists: this frontend serves nothing more. */
  #fenced = false;
  #repairTimer: NodeJS.Timeout | null = null;
  #repairing = false;

  private constructor(
    volume: { name: string; epoch: number; sizeBytes: number; readOnly: boolean },
    localNodeId: string,
    replicas: Replica[],
    hooks: FrontendHooks,
    options: {
      timeoutMs: number;
      throttle: RebuildThrottle;
      openLocal: OpenLocalExport | undefined;
      minInSync: number;
      dial: ReplicaDial;
    },
  ) {
    this.readOnly = volume.readOnly;
    this.name = volume.name;
    this.epoch = volume.epoch;
    this.#sizeBytes = volume.sizeBytes;
    this.#localNodeId = localNodeId;
    this.#replicas = new ReplicaSet(volume, replicas);
    this.#hooks = hooks;
    this.#timeoutMs = options.timeoutMs;
    this.#throttle = options.throttle;
    this.#openLocal = options.openLocal;
    this.#dial = options.dial;
    this.minInSync = options.minInSync;
    this.#activity = new ActivityLog((extents) => this.#saveActivity(extents));
    this.#rebuilder = this.#newRebuilder();
  }

  /** The rebuilds' view of this volume (its private state, reached through this object only). */
  #newRebuilder(): Rebuilder {
    const volume = this;
    return new Rebuilder({
      name: this.name,
      get sizeBytes() {
        return volume.#sizeBytes;
      },
      replicas: this.#replicas,
      gate: this.#gate,
      throttle: this.#throttle,
      get closed() {
        return volume.#closed;
      },
      get fenced() {
        return volume.#fenced;
      },
      markFenced: () => {
        this.#fenced = true;
      },
      read: (offset, length, into) => this.read(offset, length, into),
      recordFaults: () => this.#recordFaults(),
      saveActivity: () => this.#activity.saveNow(),
      recordInSync: (nodeId) => {
        const recording = this.#hooks.recordInSync(nodeId);
        // A fault recorded meanwhile must land after it (see #recordFaults).
        this.#recordingInSync = recording.catch(() => undefined);
        return recording;
      },
      connect: async (nodeId) => {
        const target = await this.#hooks.prepareReplica(nodeId);
        const client = await connectReplica(
          target,
          `${this.name}#${this.epoch}`,
          this.#localNodeId,
          this.#timeoutMs,
          this.#openLocal,
          this.#dial,
        );
        this.#addKeptLog(nodeId, target.keptLog);
        return client;
      },
      snapshots: this.#hooks.snapshots,
      rebuilt: (r) => {
        this.rebuildsCompleted++;
        this.#resyncEnded(r);
      },
    });
  }

  /** Longest time a write waited on a replica that then faulted (ms): the stall a replica loss causes. */
  get maxStallMs(): number {
    return this.#replicas.maxStallMs;
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
        const r = newReplica(target.nodeId, "", 0);
        r.inRecord = target.inSync !== false;
        if (target.inSync === false) {
          r.is = { state: "faulted", reason: "out of sync at attach", faultedAtMs: Date.now(), missing: null };
          return r;
        }
        try {
          setHealthy(
            r,
            await connectReplica(target, `${name}#${epoch}`, localNodeId, timeoutMs, options.openLocal, options.dial ?? {}),
          );
        } catch (error) {
          const reason = `unreachable at attach: ${messageOf(error)}`;
          r.is = { state: "faulted", reason, faultedAtMs: Date.now(), missing: null };
        }
        return r;
      }),
    );
    const sizes = replicas.flatMap((r) => (r.is.state === "healthy" ? [r.is.client.sizeBytes] : []));
    if (sizes.length === 0) {
      const reasons = replicas.map((r) => `${r.nodeId}: ${r.is.state === "faulted" ? r.is.reason : ""}`);
      throw new KeelsonError({
        code: "UNAVAILABLE",
        message: `no in-sync replica of ${name} answers: ${reasons.join("; ")}`,
      });
    }
    const v = new ReplicatedVolume(
      { name, epoch, sizeBytes: Math.min(...sizes, options.sizeBytes ?? Number.POSITIVE_INFINITY), readOnly },
      localNodeId,
      replicas,
      { ...NO_HOOKS, ...hooks },
      {
        timeoutMs,
        throttle,
        openLocal: options.openLocal,
        minInSync: Math.max(1, options.minInSync ?? 1),
        dial: options.dial ?? {},
      },
    );
    // A reader changes nothing: no log, no resync, no repair (replicas it cannot reach stay in sync for the record).
    if (readOnly) return v;
    // In sync in etcd but not reached: recorded out of sync before anything is acknowledged.
    for (const r of replicas) if (r.inRecord && r.is.state === "faulted") v.#replicas.unrecorded.add(r.nodeId);
    const pinned = resync === null ? null : planResync(v.#replicas, localNodeId, v.sizeBytes, resync);
    try {
      await v.#activity.start(pinned);
    } catch (error) {
      v.close();
      throw error;
    }
    for (const r of replicas) if (r.resyncing && r.is.state === "rebuilding") void v.#rebuilder.resync(r, r.is.client);
    v.#repairTimer = setInterval(() => void v.#repair(), REPAIR_INTERVAL_MS);
    v.#repairTimer.unref();
    return v;
  }

  /** A replica no longer needs its resync (made equal, or recorded out of sync): the log may let the plan go. */
  #resyncEnded(r: Replica): void {
    if (!r.resyncing) return;
    r.resyncing = false;
    if (!this.#replicas.list.some((x) => x.resyncing)) this.#activity.unpin();
  }

  /**
   * Saves the activity log on every replica that takes writes (the replicas
   * keep it with the data; etcd is not asked). A replica that cannot keep it
   * is faulted before any write it would take is sent, so every replica that
   * may hold a write holds a log naming its extent. UNAVAILABLE when no
   * healthy replica kept it; EPOCH_STALE once fenced.
   */
  async #saveActivity(extents: ActivityExtents): Promise<void> {
    if (this.#fenced) throw fencedOut(this.name, this.epoch);
    const all = extents === "all" || extents.length > MAX_ACTIVITY_EXTENTS;
    const payload = encodeActivityLog({
      sequence: ++this.#activitySaves,
      extentBytes: ACTIVITY_EXTENT_BYTES,
      all,
      extents: all ? [] : [...extents],
    });
    const targets = this.#replicas.writable();
    const started = Date.now();
    const results = await Promise.allSettled(targets.map((t) => t.client.saveActivity(payload)));
    let kept = 0;
    let stale = false;
    results.forEach((res, i) => {
      const { replica: r, client } = targets[i] as WriteTarget;
      if (res.status === "fulfilled") {
        if (r.is.state === "healthy") kept++;
        return;
      }
      stale ||= isStale(res.reason);
      // Not if it was faulted and reconnected meanwhile: that is a new connection this save never used.
      if (r.is.state !== "faulted" && r.is.client === client) this.#replicas.fault(r, res.reason, Date.now() - started, null);
    });
    if (stale) {
      this.#fenced = true;
      throw fencedOut(this.name, this.epoch);
    }
    if (kept === 0) throw this.#unavailable();
  }

  /**
   * A returning replica's own activity log names extents it may differ in
   * that no log this frontend read names (it was not reached at attach, or
   * was held out of the writes): they join what its rebuild copies.
   */
  #addKeptLog(nodeId: string, log: KeptActivityLog | undefined): void {
    const r = this.#replicas.find(nodeId);
    if (!log || r?.is.state !== "faulted" || r.is.missing === null) return;
    if (log.all) {
      r.is.missing = null;
      return;
    }
    for (const e of log.extents) r.is.missing.addRange(e * log.extentBytes, log.extentBytes);
  }

  /** Still serving: not closed, and not fenced by a newer attachment. */
  get serving(): boolean {
    return !this.#closed && !this.#fenced;
  }

  /** A replica is still being made equal to the source after a failover. */
  get resyncing(): boolean {
    return this.#replicas.list.some((r) => r.resyncing);
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
        debug("volume %s: detach not clean: %s", this.name, messageOf(error));
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
      return await fn(this.#replicas.healthy().map((r) => r.nodeId));
    } finally {
      unlock();
    }
  }

  get sizeBytes(): number {
    return this.#sizeBytes;
  }

  /**
   * Serves `sizeBytes` from now on: ResizeVolume grew every replica first, so
   * each takes I/O past the old end. NBD connections opened from now on see
   * the new size; those open keep the size they negotiated. Never shrinks.
   */
  grow(sizeBytes: number): void {
    if (sizeBytes <= this.#sizeBytes) return;
    this.#sizeBytes = sizeBytes;
    this.#replicas.grow(sizeBytes);
  }

  /** The replicas and their state now. */
  status(): ReplicaStatus[] {
    return this.#replicas.list.map(replicaStatus);
  }

  /**
   * Records every faulted replica out of sync (in etcd, under this epoch).
   * Throws when that cannot be done, so the caller acknowledges nothing: a
   * frontend cut off from etcd must not keep acknowledging writes that only
   * its reachable replicas hold, because a newer attachment may exist.
   * Resolves with the replicas the record keeps in sync for the write quorum
   * (see FrontendHooks.recordFault): they may be rebuilt without being
   * recorded, but no write they miss may be acknowledged.
   */
  async #recordFaults(): Promise<string[]> {
    // A replica being recorded in sync that faulted meanwhile: taking it out of the set before that
    // record lands would be undone by it, and a write it missed acknowledged.
    await this.#recordingInSync;
    const held: string[] = [];
    for (const nodeId of [...this.#replicas.unrecorded]) {
      let outcome: "recorded" | "held";
      try {
        outcome = await this.#hooks.recordFault(nodeId);
      } catch (error) {
        if (isStale(error)) this.#fenced = true;
        if (this.#fenced) throw fencedOut(this.name, this.epoch);
        throw new KeelsonError({
          code: "UNAVAILABLE",
          message: `volume ${this.name}: replica ${nodeId} faulted and cannot be recorded out of sync (${messageOf(error)}); not acknowledging`,
          cause: error,
        });
      }
      if (outcome === "held") {
        held.push(nodeId);
        continue;
      }
      this.#replicas.unrecorded.delete(nodeId);
      const r = this.#replicas.find(nodeId);
      if (r) {
        r.inRecord = false;
        this.#resyncEnded(r);
      }
    }
    return held;
  }

  /**
   * Replicas that count toward the write quorum: the healthy ones, and those
   * in the record being made equal after a failover (a resync): they hold
   * every acknowledged write and take every new one.
   */
  #quorumCount(): number {
    let n = 0;
    for (const r of this.#replicas.list) if (countsForQuorum(r)) n++;
    return n;
  }

  /**
   * Runs `op` on every healthy replica and every one being rebuilt; succeeds
   * when at least one healthy replica did, and faults the rest. `range` is
   * what a write touches (null for a flush).
   */
  async #everywhere(
    range: { offset: number; length: number } | null,
    op: (c: ReplicaIo) => Promise<unknown>,
    answers: ReadonlySet<string> = REQUEST_ERROR_CODES,
  ): Promise<void> {
    if (this.#fenced) throw fencedOut(this.name, this.epoch);
    if (this.readOnly) {
      if (!range) return; // nothing written, nothing to flush
      throw new KeelsonError({ code: "READ_ONLY", message: `volume ${this.name} is attached read-only on this node` });
    }
    // Checked here first: the wait is an async call, and nearly every request finds the quorum there.
    if (this.#quorumCount() < this.minInSync) await this.#awaitQuorum();
    let logged: (() => void) | null = null;
    if (range) {
      // In the activity log before any replica sees it, so a failover resyncs it if it lands on some only.
      const entered = this.#activity.enter(range.offset, range.length);
      try {
        logged = entered instanceof Promise ? await entered : entered;
      } catch (error) {
        throw this.#activityFailed(error);
      }
    }
    const entered = range ? this.#gate.enter(range.offset, range.length) : null;
    const leave = entered instanceof Promise ? await entered : entered;
    try {
      const targets = this.#replicas.writable();
      if (this.#closed || !targets.some((t) => t.replica.is.state === "healthy")) throw this.#unavailable();
      // Marked before sending: a rebuild that starts now must see every region its replica misses.
      const flushing = this.#replicas.beforeSend(range);
      const started = Date.now();
      const results = await Promise.allSettled(targets.map((t) => op(t.client)));
      // Every replica refused the request itself (the same answer from all): the request is at fault, not a replica.
      const refused = refusedByAll(results, answers);
      if (refused) {
        for (const t of targets) this.#replicas.flushed(t.replica, flushing.get(t.replica));
        throw refused;
      }
      let ok = 0;
      let quorum = 0;
      let stale = false;
      results.forEach((res, i) => {
        const r = (targets[i] as WriteTarget).replica;
        if (res.status === "fulfilled") {
          if (r.is.state === "healthy") ok++;
          if (countsForQuorum(r)) quorum++;
        } else {
          stale ||= isStale(res.reason);
          this.#replicas.fault(r, res.reason, Date.now() - started, range);
        }
        this.#replicas.flushed(r, flushing.get(r));
      });
      if (stale) {
        this.#fenced = true;
        throw fencedOut(this.name, this.epoch);
      }
      if (ok === 0) throw this.#unavailable();
      // Fewer than the quorum hold it: not acknowledged (the replicas that faulted are recorded before any later write is).
      if (quorum < this.minInSync) throw this.#belowQuorum(quorum);
      // The replicas that missed this write leave the in-sync set before it is acknowledged.
      // (Skipped when no fault waits to be recorded: nearly every request, and the call is async.)
      const held = this.#replicas.unrecorded.size === 0 ? 0 : (await this.#recordFaults()).length;
      if (held > 0) throw this.#belowQuorum(quorum);
    } finally {
      leave?.();
      logged?.();
    }
  }

  /**
   * Waits, at most QUORUM_WAIT_MS, until at least `minInSync` replicas are in
   * sync (a faulted one being rebuilt may get there); UNAVAILABLE after that,
   * so a write is never acknowledged by fewer.
   */
  async #awaitQuorum(): Promise<void> {
    if (this.#quorumCount() >= this.minInSync) return;
    const deadline = Date.now() + QUORUM_WAIT_MS;
    while (Date.now() < deadline && this.serving) {
      await new Promise((r) => setTimeout(r, QUORUM_POLL_MS));
      if (this.#quorumCount() >= this.minInSync) return;
    }
    if (this.#fenced) throw fencedOut(this.name, this.epoch);
    throw this.#belowQuorum(this.#quorumCount());
  }

  #belowQuorum(inSync: number): KeelsonError {
    return new KeelsonError({
      code: "UNAVAILABLE",
      message: `volume ${this.name}: ${inSync} replica(s) in sync, the write quorum is ${this.minInSync}; not acknowledging`,
    });
  }

  /** The error of a write whose activity log entry could not be saved (EPOCH_STALE once fenced). */
  #activityFailed(error: unknown): KeelsonError {
    if (isStale(error)) this.#fenced = true;
    if (this.#fenced) return fencedOut(this.name, this.epoch);
    return new KeelsonError({
      code: "UNAVAILABLE",
      message: `volume ${this.name}: the activity log cannot be saved (${messageOf(error)}); not writing`,
      cause: error,
    });
  }

  #unavailable(): KeelsonError {
    return new KeelsonError({
      code: "UNAVAILABLE",
      message: `volume ${this.name}: no healthy replica left (epoch ${this.epoch})`,
    });
  }

  write(offset: number, data: Buffer, fua: boolean): Promise<void> {
    return this.#everywhere({ offset, length: data.length }, (c) => c.write(offset, data, fua), WRITE_ANSWER_CODES);
  }

  zero(offset: number, length: number, trim: boolean, noHole: boolean, fua: boolean): Promise<void> {
    return this.#everywhere({ offset, length }, (c) => c.zero(offset, length, trim, noHole, fua));
  }

  flush(): Promise<void> {
    return this.#everywhere(null, (c) => c.flush());
  }

  /** The healthy replicas, this node's own first: where reads and queries go. */
  #readOrder(): ReturnType<ReplicaSet["healthy"]> {
    return this.#replicas
      .healthy()
      .sort((a, b) => Number(b.nodeId === this.#localNodeId) - Number(a.nodeId === this.#localNodeId));
  }

  /** Reads from the local replica while healthy, else from the others in turn (into `into`: see ReplicaIo.read). */
  async read(offset: number, length: number, into?: Buffer): Promise<Buffer> {
    // Checked once here: a wrong size is the caller's bug, and each replica would fault on it in turn.
    assert.ok(into === undefined || into.length === length, `a read of ${length} bytes into a buffer of ${into?.length}`);
    if (this.#fenced) throw fencedOut(this.name, this.epoch);
    const order = this.#readOrder();
    for (const r of order) {
      // Faulted while an earlier replica was tried: skipped (a replica reconnected since is read as before this split).
      const is = r.is;
      if (is.state === "faulted") continue;
      const started = Date.now();
      try {
        return await is.client.read(offset, length, into);
      } catch (error) {
        if (isStale(error)) {
          this.#fenced = true;
          throw fencedOut(this.name, this.epoch);
        }
        if (r.is.state === "healthy") this.#replicas.fault(r, error, Date.now() - started, null);
      }
    }
    throw this.#unavailable();
  }

  /**
   * Which runs hold data, from one healthy replica (the local one first):
   * every healthy replica reads the same, so a hole on one (zeros there) is
   * zeros on all. A replica that cannot answer is passed over, not faulted
   * (reads and writes judge its health); UNAVAILABLE when none answers.
   */
  async blockStatus(offset: number, length: number, maxRuns: number): Promise<AllocationRun[]> {
    if (this.#fenced) throw fencedOut(this.name, this.epoch);
    const order = this.#readOrder();
    for (const r of order) {
      const is = r.is;
      if (is.state !== "healthy") continue;
      try {
        return await is.client.blockStatus(offset, length, maxRuns);
      } catch (error) {
        if (isStale(error)) {
          this.#fenced = true;
          throw fencedOut(this.name, this.epoch);
        }
        debug("volume %s: block status from %s failed: %s", this.name, r.nodeId, messageOf(error));
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
      for (const r of this.#replicas.list) {
        if (r.is.state === "faulted" && !r.busy) void this.#rebuilder.reconnectAndRebuild(r);
      }
    } finally {
      this.#repairing = false;
    }
  }

  /** Adds replicas the leader placed (a lost one replaced) and drops those it removed. */
  async #followReplicaSet(): Promise<void> {
    if (!this.#replicas.list.some((r) => r.is.state !== "healthy")) return; // nothing to replace while all are healthy
    let wanted: readonly string[];
    try {
      wanted = await this.#hooks.replicaSet();
    } catch {
      return; // etcd away: try on the next pass
    }
    if (wanted.length === 0) return;
    this.#replicas.follow(wanted);
  }

  /** Closes every replica connection and stops repairs. Idempotent. */
  close(): void {
    this.#closed = true;
    this.#activity.close();
    if (this.#repairTimer) clearInterval(this.#repairTimer);
    this.#repairTimer = null;
    this.#replicas.closeAll();
  }
}

/** This node's replica in-process when it can be opened so, any other over NBD. */
async function connectReplica(
  target: ReplicaTarget,
  exportName: string,
  localNodeId: string,
  timeoutMs: number,
  openLocal: OpenLocalExport | undefined,
  dial: ReplicaDial,
): Promise<ReplicaIo> {
  if (openLocal && target.nodeId === localNodeId) return LocalReplica.open(openLocal, exportName);
  return ReplicaClient.connect(target.replicaAddress, exportName, timeoutMs, dial);
}

function fencedOut(name: string, epoch: number): KeelsonError {
  return new KeelsonError({
    code: "EPOCH_STALE",
    message: `volume ${name}: attachment epoch ${epoch} was fenced by a newer attachment`,
  });
}

/**
 * Codes a replica answers for the request rather than for a failure of its
 * own (a bad range or argument: nothing applied). When every replica answers
 * one of them, it is the volume's answer: the client gets it and every
 * replica stays in sync.
 */
const REQUEST_ERROR_CODES: ReadonlySet<string> = new Set(["INVALID_ARGUMENT", "OUT_OF_RANGE"]);
/**
 * A WRITE refused for space allocated nothing first (a store allocates a
 * write's extents before any byte goes down), so NO_SPACE from all is its
 * answer too. Not for zeroes: they apply extent by extent before they may
 * run out, so replicas could stop at different points.
 */
const WRITE_ANSWER_CODES: ReadonlySet<string> = new Set([...REQUEST_ERROR_CODES, "NO_SPACE"]);

function countsForQuorum(r: Replica): boolean {
  return r.is.state === "healthy" || (r.is.state === "rebuilding" && r.resyncing && r.inRecord);
}

/**
 * The error when every replica refused the request with the same request
 * error (so none of them changed anything and none is at fault); null
 * otherwise. One replica refusing what another took is a replica that
 * differs, and is faulted as before.
 */
function refusedByAll(results: readonly PromiseSettledResult<unknown>[], answers: ReadonlySet<string>): KeelsonError | null {
  const first = results[0];
  if (first?.status !== "rejected" || !(first.reason instanceof KeelsonError)) return null;
  const code = first.reason.code;
  if (!answers.has(code)) return null;
  const all = results.every((r) => r.status === "rejected" && r.reason instanceof KeelsonError && r.reason.code === code);
  return all ? first.reason : null;
}
