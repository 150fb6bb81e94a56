import type { KeelsonError } from "@keelson/sdk";
import type { ActivityLogRecord } from "./activity-record.js";
import type { DiskCapabilityRecord, QosPolicyRecord } from "./catalog.js";
import { releaseUnusedAtOpen } from "./entry-space.js";
import type { Layer } from "./layer.js";
import { type ChainChanges, chainChanges } from "./layer-diff.js";
import { collectAll } from "./layer-gc.js";
import { DEFAULT_EXTENT_SIZE_BYTES, type PoolLayout } from "./layout.js";
import { openPoolCore, type PoolCore } from "./pool-core.js";
import { layerBytesOf, lendScratch, type PoolSpace, setDiskCapability, spaceOf } from "./pool-space.js";
import { DEFAULT_OVERCOMMIT_PERCENT, type Provisioning, provisioningOf, validateOvercommitPercent } from "./provisioning.js";
import type { AdmitReservation, Reservations } from "./reservations.js";
import type { ScratchRegion } from "./scratch.js";
import { type CreateSnapshotOptions, createSnapshot, deleteSnapshot, parentSnapshotOf, revertVolume } from "./snapshot-ops.js";
import type { ChainView, Snapshot, Volume } from "./volume.js";
import { type AllocationRun, allocationMap } from "./volume-allocation.js";
import {
  type CloneSource,
  type CreateVolumeOptions,
  createVolume,
  deleteVolume,
  fenceVolume,
  reservedOn,
  resizeVolume,
  saveActivityLog,
  setVolumeQos,
} from "./volume-ops.js";

export type { CloneSource, CreateSnapshotOptions, CreateVolumeOptions, PoolSpace, Provisioning };

/** Options of {@link Pool.open}. */
export interface OpenPoolOptions {
  /** Block device or file holding the pool. */
  path: string;
  /** Create a sparse file of this size when `path` does not exist. */
  createSizeBytes?: number;
  /** Format a device that holds something other than a keelson pool (destroys it). Blank devices are always formatted. */
  forceFormat?: boolean;
  /** Extent size of a pool formatted now (default 1 MiB); an existing pool keeps its own. */
  extentSizeBytes?: number;
  /**
   * Judges QoS reservations before a volume's policy is stored (`qos/`'s
   * `admitReservation` in the engine; `acceptEveryReservation` where nothing
   * is scheduled). Required, so that no caller leaves admission out by accident.
   */
  admit: AdmitReservation;
  /**
   * Provisioned size (the sum of volume sizes) the pool may promise, in
   * percent of its data capacity (default 200). Creates and resizes beyond it
   * fail with LIMIT_EXCEEDED. An engine setting, not stored with the pool.
   */
  overcommitPercent?: number;
  /** Read and write volumes' blocks with O_DIRECT (default: KEELSON_DIRECT_IO; see `openPoolDevice`). */
  directIo?: boolean;
}

/** The device a pool lives on, as callers see it. */
export interface PoolDeviceInfo {
  readonly path: string;
  readonly sizeBytes: number;
  /** Volumes' blocks bypass the page cache (O_DIRECT). */
  readonly directIo: boolean;
}

function byName<T extends { name: string }>(a: T, b: T): number {
  return a.name < b.name ? -1 : a.name > b.name ? 1 : 0;
}

/** Gives store/ code (volume I/O) the state behind a pool; set by Pool's static block. */
let coreOfPool: (pool: Pool) => PoolCore;

/**
 * A disk pool: thin volumes and their snapshots as a tree of layers on one
 * block device or file, with its metadata (checkpoints and a journal) on the
 * same device. A layer lives while a volume head, a snapshot or a child layer
 * needs it; a layer nothing names any more is dropped, or folded into its
 * only child. Control operations run one at a time, in arrival order.
 */
export class Pool {
  /** The pool's state; the operations in volume-ops, snapshot-ops and pool-space work on it. */
  readonly #core: PoolCore;
  readonly device: PoolDeviceInfo;
  /** Control operations run one at a time, in arrival order (they await folds and commits). */
  #control: Promise<unknown> = Promise.resolve();

  static {
    coreOfPool = (pool) => pool.#core;
  }

  private constructor(core: PoolCore) {
    this.#core = core;
    this.device = { path: core.device.path, sizeBytes: core.device.sizeBytes, directIo: core.device.directIo };
  }

  /**
   * Opens (formatting when blank) the pool on `options.path`, then gives
   * back space a crash left held without data and finishes any layer fold a
   * crash interrupted.
   */
  static async open(options: OpenPoolOptions): Promise<Pool> {
    const pool = new Pool(
      openPoolCore({
        path: options.path,
        createSizeBytes: options.createSizeBytes,
        forceFormat: options.forceFormat ?? false,
        extentSizeBytes: options.extentSizeBytes ?? DEFAULT_EXTENT_SIZE_BYTES,
        admit: options.admit,
        overcommitPercent: validateOvercommitPercent(options.overcommitPercent ?? DEFAULT_OVERCOMMIT_PERCENT),
        directIo: options.directIo,
      }),
    );
    try {
      await pool.#serial(async () => {
        releaseUnusedAtOpen(pool.#core);
        await collectAll(pool.#core);
      });
    } catch (error) {
      await pool.close().catch(() => undefined);
      throw error;
    }
    return pool;
  }

  #serial<T>(op: () => Promise<T>): Promise<T> {
    const run = this.#control.then(op, op);
    this.#control = run.catch(() => undefined);
    return run;
  }

  /** The pool's geometry as formatted (uid, extent size, extent count, ...). */
  get layout(): Readonly<PoolLayout> {
    return this.#core.layout;
  }

  /** The pool's fatal failure (a failed fsync), if any. */
  get failure(): KeelsonError | null {
    return this.#core.failure;
  }

  /** Layer folds a crash had interrupted, finished by {@link Pool.open}. */
  get foldsFinishedAtOpen(): number {
    return this.#core.foldsFinishedAtOpen;
  }

  /** Extent entries with state (data or zero markers); at most `layout.maxEntries`. */
  get entryCount(): number {
    return this.#core.entryCount;
  }

  /** What the disk can do (calibrated or operator-set); undefined until measured or set. */
  get disk(): DiskCapabilityRecord | undefined {
    return this.#core.disk;
  }

  space(): PoolSpace {
    return spaceOf(this.#core);
  }

  /** What the pool's volumes promise (the sum of their sizes) against its over-commit limit. */
  provisioning(): Provisioning {
    return provisioningOf(this.#core);
  }

  /** Pool bytes held by one layer alone (a volume's head, a snapshot's layer). */
  layerBytes(layer: Layer): number {
    return layerBytesOf(this.#core, layer);
  }

  /** Reservations admitted on this disk, leaving out the volume `exceptUid`. */
  reserved(exceptUid?: string): Reservations {
    return reservedOn(this.#core, exceptUid);
  }

  /** Volumes ordered by name. */
  listVolumes(): Volume[] {
    return [...this.#core.volumes.values()].sort(byName);
  }

  /** The volume named `name`; VOLUME_NOT_FOUND when there is none. */
  getVolume(name: string): Volume {
    return this.#core.getVolume(name);
  }

  /** The volume named `name`, or undefined. */
  findVolume(name: string): Volume | undefined {
    return this.#core.volumes.get(name);
  }

  /** Snapshots ordered by export name; only those taken of `volumeName` when given. */
  listSnapshots(volumeName?: string): Snapshot[] {
    const all = [...this.#core.snapshots.values()].sort(byName);
    return volumeName === undefined ? all : all.filter((s) => s.record.volumeName === volumeName);
  }

  /** One snapshot; SNAPSHOT_NOT_FOUND when there is none. */
  getSnapshot(volumeName: string, name: string): Snapshot {
    return this.#core.getSnapshot(volumeName, name);
  }

  /** A snapshot by export name `VOLUME@SNAPSHOT`, or undefined. */
  findSnapshot(exportName: string): Snapshot | undefined {
    return this.#core.snapshots.get(exportName);
  }

  /**
   * The extents of volume `volumeName`'s head, or of its snapshot
   * `snapshotName` when not "", that may differ from its snapshot
   * `baseSnapshotName` (from an empty volume when ""), from the layers'
   * allocation maps (see {@link chainChanges}). Reads only in-memory indexes.
   * VOLUME_NOT_FOUND / SNAPSHOT_NOT_FOUND when either is missing.
   */
  changes(volumeName: string, snapshotName: string, baseSnapshotName: string): ChainChanges {
    const view = snapshotName === "" ? this.getVolume(volumeName) : this.getSnapshot(volumeName, snapshotName);
    const base = baseSnapshotName === "" ? null : this.getSnapshot(volumeName, baseSnapshotName);
    return chainChanges(view, base, this.#core.layout.extentSizeBytes);
  }

  /**
   * Which bytes of `view` (a volume or snapshot of this pool) from `offset`
   * hold data and which are holes, in at most `maxRuns` runs covering at most
   * `length` bytes (see {@link allocationMap}). Reads only in-memory indexes.
   * OUT_OF_RANGE past the end; VOLUME_NOT_FOUND once deleted.
   */
  allocation(view: ChainView, offset: number, length: number, maxRuns: number): AllocationRun[] {
    return allocationMap(view, this.#core.layout.extentSizeBytes, offset, length, maxRuns);
  }

  /** The newest snapshot below `snap` in its chain (its parent snapshot), if any. */
  parentSnapshotOf(snap: Snapshot): Snapshot | undefined {
    return parentSnapshotOf(this.#core, snap);
  }

  /**
   * Creates a volume, empty or as a clone (durable before it returns). Its
   * QoS reservation is judged by the pool's admit hook first. Idempotent: the
   * same name, size, labels, replicas, source and QoS return the existing
   * volume; anything different fails with ALREADY_EXISTS. A new volume that
   * would take the provisioned total past the over-commit limit fails with
   * LIMIT_EXCEEDED.
   */
  createVolume(options: CreateVolumeOptions): Promise<Volume> {
    return this.#serial(() => createVolume(this.#core, options));
  }

  /**
   * Deletes a volume and frees its space once the deletion is durable. Its
   * snapshots stay (their layers are kept). VOLUME_NOT_FOUND when absent;
   * VOLUME_IN_USE while export handles are open. Returns the bytes freed.
   */
  deleteVolume(name: string): Promise<number> {
    return this.#serial(() => deleteVolume(this.#core, name));
  }

  /**
   * Grows a volume, online (durable before it returns). Idempotent;
   * SHRINK_NOT_SUPPORTED for a smaller size; LIMIT_EXCEEDED when the growth
   * would take the provisioned total past the over-commit limit.
   */
  resizeVolume(name: string, sizeBytes: number): Promise<Volume> {
    return this.#serial(() => resizeVolume(this.#core, name, sizeBytes));
  }

  /**
   * Fences the volume at `epoch`: from now on only I/O under this epoch or a
   * newer one is served, so a frontend holding an older attachment can get
   * nothing more acknowledged. Durable before it returns. Idempotent for the
   * current epoch; EPOCH_STALE for an older one.
   */
  fenceVolume(name: string, epoch: number): Promise<Volume> {
    return this.#serial(() => fenceVolume(this.#core, name, epoch));
  }

  /**
   * Keeps the write-intent log of the volume's frontend at `log.epoch` with
   * the volume: in its record at once, on disk with the next commit (one
   * starts within a second, and every FLUSH commits): EPOCH_STALE when the volume is
   * fenced past that epoch, INVALID_ARGUMENT for a save older than the one
   * kept. The next frontend reads it from the volume's record.
   */
  saveActivityLog(name: string, log: ActivityLogRecord): Promise<Volume> {
    return this.#serial(() => saveActivityLog(this.#core, name, log));
  }

  /**
   * Replaces a volume's QoS policy (durable before it returns). The
   * reservation is judged by the pool's admit hook first, against the other
   * volumes' reservations (QOS_ADMISSION_DENIED). Idempotent.
   */
  setVolumeQos(name: string, qos: QosPolicyRecord, qosClass: string | undefined): Promise<Volume> {
    return this.#serial(() => setVolumeQos(this.#core, name, qos, qosClass));
  }

  /**
   * Takes a snapshot: O(1), no data is copied. Every write completed before
   * the call returns is in it, and no write is partly in it. Durable before
   * it returns. Idempotent: the same volume, name and labels return the
   * existing snapshot; other labels fail with ALREADY_EXISTS.
   */
  createSnapshot(options: CreateSnapshotOptions): Promise<Snapshot> {
    return this.#serial(() => createSnapshot(this.#core, options));
  }

  /**
   * Deletes a snapshot; its data is folded into the layer above it while I/O
   * continues. SNAPSHOT_NOT_FOUND when absent; VOLUME_IN_USE while its export
   * is open. Returns the bytes given back to the pool.
   */
  deleteSnapshot(volumeName: string, name: string): Promise<number> {
    return this.#serial(() => deleteSnapshot(this.#core, volumeName, name));
  }

  /**
   * Puts a volume back to a snapshot of it: its data and size become the
   * snapshot's. The volume must have no open connections (VOLUME_IN_USE):
   * a connected client would keep cached blocks of the discarded data, and a
   * mounted filesystem would be corrupted under its feet. Durable on return.
   */
  revertVolume(volumeName: string, snapshotName: string): Promise<Volume> {
    return this.#serial(() => revertVolume(this.#core, volumeName, snapshotName));
  }

  /** Records the disk's capability (calibration or operator); durable before it returns. */
  setDiskCapability(disk: DiskCapabilityRecord): Promise<void> {
    return this.#serial(() => setDiskCapability(this.#core, disk));
  }

  /**
   * Lends free extents as a scratch region for `use` (calibration writes
   * there), then frees them. Runs with control operations held off;
   * NO_SPACE when no extent is free.
   */
  withScratch<T>(maxBytes: number, use: (region: ScratchRegion) => Promise<T>): Promise<T> {
    return this.#serial(() => lendScratch(this.#core, maxBytes, use));
  }

  /** Makes every change and completed write so far durable (group commit); UNAVAILABLE once closed. */
  flush(): Promise<void> {
    return this.#core.flush();
  }

  /** Waits for running control operations, writes a final checkpoint and closes the device. Idempotent. */
  async close(): Promise<void> {
    if (this.#core.closed) return;
    await this.#control;
    if (this.#core.closed) return;
    try {
      await this.#core.checkpoint();
    } finally {
      this.#core.closed = true;
      this.#core.device.close();
    }
  }

  /**
   * Closes the device without a commit or checkpoint, leaving the pool as a
   * killed process would (tests of crash recovery in one process).
   */
  abandon(): void {
    if (this.#core.closed) return;
    this.#core.closed = true;
    this.#core.device.close();
  }
}

/** The state behind `pool`, for store/ code only (volume I/O). */
export function poolCore(pool: Pool): PoolCore {
  return coreOfPool(pool);
}
