import { KeelsonError } from "@keelson/sdk";
import createDebug from "debug";
import { messageOf } from "../util/errors.js";
import type { ReplicaIo } from "./local-replica.js";
import type { RangeGate } from "./range-gate.js";
import type { RebuildThrottle } from "./rebuild-throttle.js";
import { REBUILD_FLUSH_BYTES, RebuildWriteback } from "./rebuild-writeback.js";
import { REGION_BYTES } from "./region-map.js";
import { type RebuildingReplica, type Replica, type ReplicaSet, setHealthy, setRebuilding, setRebuilt } from "./replica-set.js";

const debug = createDebug("keelson:replication");

/** Regions a rebuild copies at once. */
const REBUILD_PARALLEL = 4;

const ZERO_REGION = Buffer.alloc(REGION_BYTES);

/** A byte range of the volume. */
export interface ByteRange {
  offset: number;
  length: number;
}

/** What {@link SnapshotChain.copyMissing} did. */
export interface SnapshotCopyOutcome {
  /** The newest snapshot the replica now shares with `source` (a healthy replica's node); null when the volume has none. */
  base: { name: string; source: string } | null;
  /** Snapshots copied to the replica. */
  copied: number;
  /** Every snapshot the copy considered (copied, held already, or left out); one missing and not in here was taken since. */
  seen: ReadonlySet<string>;
}

/**
 * The volume's snapshots as a rebuild copies them; the cluster provides it.
 * A replica's snapshots are sealed from its own head, so they are copied
 * before the head, while the replica takes no application write.
 */
export interface SnapshotChain {
  /**
   * Copies to replica `nodeId`, through `client` (its head at this epoch),
   * every snapshot of the volume it does not hold, oldest first: for each,
   * what may differ from the one before, read from a holder among `sources`,
   * then sealed there under the same name and recorded with it as a holder.
   * Idempotent (what it holds already is skipped). Throws when no source answers.
   */
  copyMissing(req: {
    nodeId: string;
    client: ReplicaIo;
    sources: readonly string[];
    throttle: RebuildThrottle;
  }): Promise<SnapshotCopyOutcome>;
  /** The byte ranges where the heads of `source` and of `nodeId` may differ from their shared snapshot `base`. */
  headChanges(req: { nodeId: string; source: string; base: string }): Promise<ByteRange[]>;
  /** Snapshots of the volume (recorded now) that `nodeId` does not hold. */
  missingOn(nodeId: string): Promise<string[]>;
}

/** What a rebuild needs of the replicated volume it works for. */
export interface RebuildHost {
  readonly name: string;
  readonly sizeBytes: number;
  readonly replicas: ReplicaSet;
  /** Held per region copied, so no write to it is in flight between the read and the copy's write. */
  readonly gate: RangeGate;
  /** Paces the copies (shared by every frontend of the node). */
  readonly throttle: RebuildThrottle;
  /** The volume was closed: rebuilds stop. */
  readonly closed: boolean;
  /** A newer attachment exists: nothing more is done. */
  readonly fenced: boolean;
  /** Called on an EPOCH_STALE answer. */
  markFenced(): void;
  /** Reads from the healthy replicas, as the application does (into `into`: see ReplicaIo.read). */
  read(offset: number, length: number, into?: Buffer): Promise<Buffer>;
  /** Records every unrecorded fault in etcd (throws when it cannot); resolves with those the record keeps in sync for the quorum. */
  recordFaults(): Promise<string[]>;
  /** Saves the activity log on every replica taking writes (faulting those that cannot keep it). */
  saveActivity(): Promise<void>;
  /** Records a rebuilt replica in sync. */
  recordInSync(nodeId: string): Promise<void>;
  /** Fences a returning replica at this epoch and connects to it. */
  connect(nodeId: string): Promise<ReplicaIo>;
  /** A rebuild finished and the replica serves again. */
  rebuilt(r: Replica): void;
  /** Copies the snapshot chain before the head; absent: only the head is copied. */
  readonly snapshots?: SnapshotChain | undefined;
}

/**
 * Brings replicas back: reconnects a faulted one and copies what it lacks
 * while it takes every new write (only the regions it may have missed when
 * that is known, every region otherwise), then records it in sync.
 */
export class Rebuilder {
  readonly #host: RebuildHost;
  readonly #flushBytes: number;

  /** `flushBytes`: what a rebuild copies between the flushes it starts on the replica as it goes. */
  constructor(host: RebuildHost, flushBytes = REBUILD_FLUSH_BYTES) {
    this.#host = host;
    this.#flushBytes = flushBytes;
  }

  /** Reconnects a faulted replica and rebuilds it; on failure it stays faulted for the next repair pass. */
  async reconnectAndRebuild(r: Replica): Promise<void> {
    const host = this.#host;
    r.busy = true;
    try {
      // Its fault must be in etcd before it may count again (no write may have recorded it yet),
      // unless the record keeps it in sync for the write quorum: then no write was acknowledged
      // without it, and rebuilding what it lacks (writes that were not acknowledged) is all it needs.
      if (host.replicas.unrecorded.has(r.nodeId)) {
        try {
          await host.recordFaults();
        } catch {
          return;
        }
      }
      let client: ReplicaIo;
      try {
        client = await host.connect(r.nodeId);
      } catch (error) {
        if (isStale(error)) host.markFenced();
        return; // still away: the next pass tries again
      }
      if (host.closed || host.fenced || r.is.state !== "faulted") {
        client.close();
        return;
      }
      if (client.sizeBytes < host.sizeBytes) {
        client.close();
        r.is.reason = `replica is ${client.sizeBytes} bytes, the volume ${host.sizeBytes}`;
        return;
      }
      if (this.#soleCopy(r)) await this.#takeBack(r, client);
      else await this.#rebuild(r, client);
    } finally {
      r.busy = false;
    }
  }

  /**
   * `r` is the only replica the record holds in sync, and none is healthy:
   * there is no source to copy from (always so when a one-replica volume's
   * replica faulted).
   */
  #soleCopy(r: Replica): boolean {
    const { list } = this.#host.replicas;
    return r.inRecord && !list.some((x) => x !== r && (x.inRecord || x.is.state === "healthy"));
  }

  /**
   * Takes the only in-sync replica back as it is, as a new attachment would
   * open it. The record kept it in sync (a frontend cannot take the last one
   * out), so no write it missed was acknowledged; writes it had not flushed
   * when its engine died are lost as on any disk (there is no other copy to
   * bring them back). It serves at once; its activity log is saved as any
   * replica's before it is relied on (one that cannot keep it is faulted
   * again by the save).
   */
  async #takeBack(r: Replica, client: ReplicaIo): Promise<void> {
    const host = this.#host;
    setHealthy(r, client);
    host.replicas.unrecorded.delete(r.nodeId);
    try {
      await host.saveActivity();
    } catch (error) {
      if (isStale(error)) host.markFenced();
      if (r.is.state === "healthy" && r.is.client === client) host.replicas.fault(r, error, 0, null);
      return;
    }
    debug("volume %s: replica %s taken back as it is (the only one in sync, no source to copy from)", host.name, r.nodeId);
  }

  /** Makes an in-sync replica marked by the resync plan equal to the source, while it takes every write. */
  async resync(r: Replica, client: ReplicaIo): Promise<void> {
    r.busy = true;
    try {
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
    const host = this.#host;
    const started = Date.now();
    if (r.is.state === "healthy") return;
    const snapshots = r.is.state === "faulted" ? await this.#copySnapshots(r, client) : null;
    if (snapshots === "failed") return;
    // Copied snapshots rewrote its head to the newest one: what it missed is then what changed since.
    let regions = r.is.missing === null || (snapshots?.copied ?? 0) > 0 ? null : [...r.is.missing];
    let total = regions ? regions.length : Math.ceil(host.sizeBytes / REGION_BYTES);
    // From here on it takes every write (and marks nothing more missing). Copied snapshots make what
    // it missed unknown to a later pass (its head changed), so it starts from nothing known then.
    const since = regions === null ? { ...r.is, missing: null } : r.is;
    const state = setRebuilding(r, client, since, Math.min(total * REGION_BYTES, host.sizeBytes));
    const full = state.full;
    const writeback = new RebuildWriteback(() => client.flush(), this.#flushBytes);
    let next = 0;
    const worker = async (): Promise<void> => {
      // One region buffer per worker, reused: a new one per region left the frontend's GC a quarter of its time.
      const buffer = Buffer.allocUnsafe(REGION_BYTES);
      while (next < total && r.is === state && !host.closed) {
        const region = regions ? (regions[next++] as number) : next++;
        await writeback.copied(await this.#copyRegion(state, client, region, buffer));
      }
    };
    try {
      if (regions === null && snapshots?.base) {
        // Both heads hold the same snapshot below them: only what changed above it on either side differs.
        regions = await this.#headRegions(r.nodeId, snapshots.base);
        total = regions.length;
        state.totalBytes = Math.min(total * REGION_BYTES, host.sizeBytes);
      }
      debug("volume %s: rebuilding %s (%s, %d regions)", host.name, r.nodeId, full ? "full" : "incremental", total);
      try {
        await Promise.all(Array.from({ length: REBUILD_PARALLEL }, worker));
      } finally {
        // Even when a copy failed: no flush of this rebuild is left running behind it.
        await writeback.settle().catch(() => undefined);
      }
      await writeback.settle();
      if (r.is !== state || host.closed) return;
      await client.flush();
      if (snapshots !== null) await this.#checkSnapshots(r.nodeId, snapshots);
      // It took writes since before this save began but holds no log naming them: it must, before it
      // counts as in sync, or a failover reaching it could miss an extent in flight.
      await host.saveActivity();
      if (r.is !== state) return; // it could not keep the log: faulted
      // In the record from the moment it is asked for: a fault from now on must be recorded (and the
      // outcome of a record that fails is unknown).
      r.inRecord = true;
      await host.recordInSync(r.nodeId);
      // A replica the record kept in sync (held for the quorum) has nothing left to record, unless it
      // faulted while it was being recorded.
      if (r.is === state) host.replicas.unrecorded.delete(r.nodeId);
    } catch (error) {
      if (isStale(error)) host.markFenced();
      if (r.is === state) host.replicas.fault(r, error, 0, null);
      return;
    }
    if (r.is !== state) return;
    setRebuilt(r, state);
    r.lastRebuild = { bytes: state.copiedBytes, ms: Date.now() - started, full };
    host.rebuilt(r);
    debug("volume %s: replica %s rebuilt (%d bytes in %d ms)", host.name, r.nodeId, state.copiedBytes, Date.now() - started);
  }

  /**
   * Copies the snapshots `r` lacks while it still takes no write; null when
   * the volume keeps no snapshot chain here, "failed" when they could not be
   * copied (it stays faulted, and the next repair pass tries again).
   */
  async #copySnapshots(r: Replica, client: ReplicaIo): Promise<SnapshotCopyOutcome | null | "failed"> {
    const host = this.#host;
    if (!host.snapshots) return null;
    const sources = host.replicas.healthy().map((h) => h.nodeId);
    try {
      const outcome = await host.snapshots.copyMissing({ nodeId: r.nodeId, client, sources, throttle: host.throttle });
      if (host.closed || host.fenced || r.is.state !== "faulted") {
        client.close();
        return "failed";
      }
      return outcome;
    } catch (error) {
      client.close();
      if (isStale(error)) host.markFenced();
      if (r.is.state === "faulted") r.is.reason = `its snapshots could not be copied: ${messageOf(error)}`;
      debug("volume %s: snapshots of %s not copied: %s", host.name, r.nodeId, messageOf(error));
      return "failed";
    }
  }

  /**
   * The regions where `nodeId`'s head may differ from the healthy ones, both
   * above snapshot `base`. Asked once every write sent before the replica
   * took writes has finished (the whole range is taken once, then let go),
   * so each of those is in the source's allocation map already.
   */
  async #headRegions(nodeId: string, base: { name: string; source: string }): Promise<number[]> {
    const host = this.#host;
    (await host.gate.lock(0, host.sizeBytes))();
    const ranges = await (host.snapshots as SnapshotChain).headChanges({ nodeId, source: base.source, base: base.name });
    const regions = new Set<number>();
    for (const { offset, length } of ranges) {
      const end = Math.min(offset + length, host.sizeBytes);
      for (let at = Math.floor(offset / REGION_BYTES); at * REGION_BYTES < end; at++) regions.add(at);
    }
    return [...regions].sort((a, b) => a - b);
  }

  /**
   * A snapshot taken while the head was copied (the replica took no part in
   * it) is missing there: the rebuild does not count, and the next repair
   * pass copies it first (what the head took since is covered: it is above
   * the shared snapshot on the replica's own side).
   */
  async #checkSnapshots(nodeId: string, copied: SnapshotCopyOutcome | null): Promise<void> {
    const chain = this.#host.snapshots;
    if (!chain) return;
    const since = (await chain.missingOn(nodeId)).filter((name) => !copied?.seen.has(name));
    if (since.length === 0) return;
    throw new KeelsonError({
      code: "UNAVAILABLE",
      message: `snapshot(s) ${since.join(", ")} taken while ${nodeId} was rebuilt: copied on the next pass`,
    });
  }

  /**
   * Copies one region through `buffer`, free again once this resolves (the
   * replica's write has answered, so neither the socket nor the store holds
   * it). After a failure it may still be held: the caller must not reuse it
   * (a failed copy ends its worker). Resolves with the bytes it wrote as
   * data (a hole is written as one).
   */
  async #copyRegion(state: RebuildingReplica, client: ReplicaIo, region: number, buffer: Buffer): Promise<number> {
    const host = this.#host;
    const offset = region * REGION_BYTES;
    const length = Math.min(REGION_BYTES, host.sizeBytes - offset);
    if (length <= 0) return 0;
    // Paced before the gate is taken: waiting here holds no application write back.
    await host.throttle.take(length);
    const unlock = await host.gate.lock(offset, length);
    try {
      const data = await host.read(offset, length, buffer.subarray(0, length));
      // Holes stay holes on the new replica (it is thin too).
      const hole = isZero(data);
      if (hole) await client.zero(offset, length, true, false, false);
      else await client.write(offset, data, false);
      state.copiedBytes += length;
      return hole ? 0 : length;
    } finally {
      unlock();
    }
  }
}

function isZero(data: Buffer): boolean {
  return data.length <= ZERO_REGION.length && data.equals(ZERO_REGION.subarray(0, data.length));
}

/** The error says a newer attachment fenced this one. */
export function isStale(error: unknown): boolean {
  return error instanceof KeelsonError && error.code === "EPOCH_STALE";
}
