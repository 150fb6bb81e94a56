import { KeelsonError } from "@keelson/sdk";
import createDebug from "debug";
import type { ReplicaIo } from "./local-replica.js";
import type { RangeGate } from "./range-gate.js";
import type { RebuildThrottle } from "./rebuild-throttle.js";
import { REGION_BYTES } from "./region-map.js";
import { type RebuildingReplica, type Replica, type ReplicaSet, setRebuilding, setRebuilt } from "./replica-set.js";

const debug = createDebug("keelson:replication");

/** Regions a rebuild copies at once. */
const REBUILD_PARALLEL = 4;

const ZERO_REGION = Buffer.alloc(REGION_BYTES);

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
  /** Reads from the healthy replicas, as the application does. */
  read(offset: number, length: number): Promise<Buffer>;
  /** Records every unrecorded fault in etcd (throws when it cannot); resolves with those the record keeps in sync for the quorum. */
  recordFaults(): Promise<string[]>;
  /** Records a rebuilt replica in sync. */
  recordInSync(nodeId: string): Promise<void>;
  /** Fences a returning replica at this epoch and connects to it. */
  connect(nodeId: string): Promise<ReplicaIo>;
  /** A rebuild finished and the replica serves again. */
  rebuilt(r: Replica): void;
}

/**
 * Brings replicas back: reconnects a faulted one and copies what it lacks
 * while it takes every new write (only the regions it may have missed when
 * that is known, every region otherwise), then records it in sync.
 */
export class Rebuilder {
  readonly #host: RebuildHost;

  constructor(host: RebuildHost) {
    this.#host = host;
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
      await this.#rebuild(r, client);
    } finally {
      r.busy = false;
    }
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
    const regions = r.is.missing === null ? null : [...r.is.missing];
    const total = regions ? regions.length : Math.ceil(host.sizeBytes / REGION_BYTES);
    // From here on it takes every write (and marks nothing more missing).
    const state = setRebuilding(r, client, r.is, Math.min(total * REGION_BYTES, host.sizeBytes));
    const full = state.full;
    debug("volume %s: rebuilding %s (%s, %d regions)", host.name, r.nodeId, full ? "full" : "incremental", total);
    let next = 0;
    const worker = async (): Promise<void> => {
      while (next < total && r.is === state && !host.closed) {
        const region = regions ? (regions[next++] as number) : next++;
        await this.#copyRegion(state, client, region);
      }
    };
    try {
      await Promise.all(Array.from({ length: REBUILD_PARALLEL }, worker));
      if (r.is !== state || host.closed) return;
      await client.flush();
      await host.recordInSync(r.nodeId);
      r.inRecord = true;
      // A replica the record kept in sync (held for the quorum) has nothing left to record.
      host.replicas.unrecorded.delete(r.nodeId);
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

  async #copyRegion(state: RebuildingReplica, client: ReplicaIo, region: number): Promise<void> {
    const host = this.#host;
    const offset = region * REGION_BYTES;
    const length = Math.min(REGION_BYTES, host.sizeBytes - offset);
    if (length <= 0) return;
    // Paced before the gate is taken: waiting here holds no application write back.
    await host.throttle.take(length);
    const unlock = await host.gate.lock(offset, length);
    try {
      const data = await host.read(offset, length);
      // Holes stay holes on the new replica (it is thin too).
      if (isZero(data)) await client.zero(offset, length, true, false, false);
      else await client.write(offset, data, false);
      state.copiedBytes += length;
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
