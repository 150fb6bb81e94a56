import { KeelsonError } from "@keelson/sdk";
import { asWireError } from "../nbd/errno.js";
import type { AllocationRun, BlockStatusCallback, ExportCallback } from "../nbd/export.js";
import type { IoCounters } from "../store/io-counters.js";
import type { Pool } from "../store/pool.js";
import type { Snapshot, Volume } from "../store/volume.js";
import { flushVolume, readVolume, writeVolume, type ZeroOptions, zeroVolume } from "../store/volume-io.js";
import type { BlockIo } from "./block-io.js";

/** Where a target's I/O ends: the local store or the replicated fan-out. */
export interface TargetBackend extends BlockIo {
  /** Size now (a volume may grow; a client sees the new size when it reconnects). */
  readonly sizeBytes: number;
  /** Which runs hold data (NBD_CMD_BLOCK_STATUS); absent where the backend cannot tell, and all is reported as data. */
  blockStatus?(offset: number, length: number, maxRuns: number, cb: BlockStatusCallback): void;
}

/** A pool's allocation map as a block status answer: synchronous, from in-memory indexes. */
function poolBlockStatus(
  pool: Pool,
  view: Volume | Snapshot,
  offset: number,
  length: number,
  maxRuns: number,
  cb: BlockStatusCallback,
): void {
  let runs: ReturnType<Pool["allocation"]>;
  try {
    runs = pool.allocation(view, offset, length, maxRuns);
  } catch (error) {
    return cb(asWireError(error), null);
  }
  cb(null, runs);
}

/** A volume of this node's pool: the store's own calls, nothing in between. */
export class LocalVolumeBackend implements TargetBackend {
  readonly #pool: Pool;
  readonly #volume: Volume;

  constructor(pool: Pool, volume: Volume) {
    this.#pool = pool;
    this.#volume = volume;
  }

  get sizeBytes(): number {
    return this.#volume.sizeBytes;
  }

  read(offset: number, length: number, buf: Buffer, bufOffset: number, cb: ExportCallback): void {
    readVolume(this.#pool, this.#volume, offset, length, buf, bufOffset, cb);
  }

  write(offset: number, data: Buffer, fua: boolean, cb: ExportCallback): void {
    writeVolume(this.#pool, this.#volume, offset, data, fua, cb);
  }

  zero(offset: number, length: number, options: ZeroOptions, cb: ExportCallback): void {
    zeroVolume(this.#pool, this.#volume, offset, length, options, cb);
  }

  flush(cb: ExportCallback): void {
    flushVolume(this.#pool, cb);
  }

  blockStatus(offset: number, length: number, maxRuns: number, cb: BlockStatusCallback): void {
    poolBlockStatus(this.#pool, this.#volume, offset, length, maxRuns, cb);
  }
}

/** A snapshot of this node's pool: reads from its layers; writes fail with READ_ONLY (EPERM); a flush has nothing to do. */
export class SnapshotBackend implements TargetBackend {
  readonly #pool: Pool;
  readonly #snapshot: Snapshot;

  constructor(pool: Pool, snapshot: Snapshot) {
    this.#pool = pool;
    this.#snapshot = snapshot;
  }

  get sizeBytes(): number {
    return this.#snapshot.sizeBytes;
  }

  read(offset: number, length: number, buf: Buffer, bufOffset: number, cb: ExportCallback): void {
    readVolume(this.#pool, this.#snapshot, offset, length, buf, bufOffset, cb);
  }

  write(_offset: number, _data: Buffer, _fua: boolean, cb: ExportCallback): void {
    cb(this.#readOnly());
  }

  zero(_offset: number, _length: number, _options: ZeroOptions, cb: ExportCallback): void {
    cb(this.#readOnly());
  }

  flush(cb: ExportCallback): void {
    cb(null);
  }

  blockStatus(offset: number, length: number, maxRuns: number, cb: BlockStatusCallback): void {
    poolBlockStatus(this.#pool, this.#snapshot, offset, length, maxRuns, cb);
  }

  #readOnly(): KeelsonError {
    return new KeelsonError({ code: "READ_ONLY", message: `snapshot ${this.#snapshot.name} is read-only; clone it to write` });
  }
}

/**
 * What a target needs of a replicated volume attached on this node (the
 * fan-out `ReplicatedVolume` of replication/ has this shape; declared here
 * so that the pipeline does not depend on the replication module).
 */
export interface ReplicatedIo {
  readonly name: string;
  /** Request counters and latencies of the volume's exports on this node, shared by every target opened on it. */
  readonly io: IoCounters;
  /** The attachment's epoch: every replica request carries it, and each replica's own target fences it. */
  readonly epoch: number;
  readonly sizeBytes: number;
  readonly readOnly: boolean;
  /** NBD connections open on it now (a detach refuses while any is, unless forced). */
  openHandles: number;
  /** Reads into `into` when given (see ReplicaIo.read). */
  read(offset: number, length: number, into?: Buffer): Promise<Buffer>;
  write(offset: number, data: Buffer, fua: boolean): Promise<void>;
  zero(offset: number, length: number, trim: boolean, noHole: boolean, fua: boolean): Promise<void>;
  flush(): Promise<void>;
  /** Allocation from one healthy replica (see NbdExport.blockStatus). */
  blockStatus(offset: number, length: number, maxRuns: number): Promise<AllocationRun[]>;
}

/**
 * The replicated fan-out as a backend. The fan-out is promise-based (it waits
 * on several replicas), so each request here costs its promise callbacks, as
 * the replicated path always did; local volumes never come this way.
 */
export class ReplicatedBackend implements TargetBackend {
  readonly #volume: ReplicatedIo;

  constructor(volume: ReplicatedIo) {
    this.#volume = volume;
  }

  get sizeBytes(): number {
    return this.#volume.sizeBytes;
  }

  read(offset: number, length: number, buf: Buffer, bufOffset: number, cb: ExportCallback): void {
    // Straight into the reply: no buffer of its own, no copy (one that came back elsewhere is copied).
    const into = buf.subarray(bufOffset, bufOffset + length);
    this.#volume.read(offset, length, into).then(
      (data) => {
        if (data !== into) data.copy(into);
        cb(null);
      },
      (e: KeelsonError) => cb(e),
    );
  }

  write(offset: number, data: Buffer, fua: boolean, cb: ExportCallback): void {
    // No copy: the replica clients send this very buffer (their header apart), so
    // the connection leaves it untouched until the callback, which comes once
    // every replica settled (the volume waits for all of them).
    this.#volume.write(offset, data, fua).then(
      () => cb(null),
      (e: KeelsonError) => cb(e),
    );
  }

  zero(offset: number, length: number, options: ZeroOptions, cb: ExportCallback): void {
    this.#volume.zero(offset, length, options.trim, options.noHole, options.fua).then(
      () => cb(null),
      (e: KeelsonError) => cb(e),
    );
  }

  flush(cb: ExportCallback): void {
    this.#volume.flush().then(
      () => cb(null),
      (e: KeelsonError) => cb(e),
    );
  }

  blockStatus(offset: number, length: number, maxRuns: number, cb: BlockStatusCallback): void {
    this.#volume.blockStatus(offset, length, maxRuns).then(
      (runs) => cb(null, runs),
      (e: KeelsonError) => cb(e, null),
    );
  }
}
