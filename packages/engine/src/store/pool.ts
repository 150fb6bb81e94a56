import { randomUUID } from "node:crypto";
import fs from "node:fs";
import { KeelsonError } from "@keelson/sdk";
import createDebug from "debug";
import { newStates } from "./block-states.js";
import {
  absentQosPolicy,
  type CatalogChange,
  type CatalogSnapshot,
  type DiskCapabilityRecord,
  type EntryRecord,
  type LayerRecord,
  type QosPolicyRecord,
  type SnapshotRecord,
  type VolumeRecord,
  type VolumeSource,
} from "./catalog.js";
import { ExtentAllocator } from "./extent-allocator.js";
import { ExtentEntry, Layer } from "./layer.js";
import { type FoldStore, foldIntoChild } from "./layer-fold.js";
import {
  DEFAULT_EXTENT_SIZE_BYTES,
  decodeSuperblock,
  encodeSuperblock,
  type PoolLayout,
  planLayout,
  SUPERBLOCK_SIZE_BYTES,
  stateBytesOf,
} from "./layout.js";
import { recoverMetadata } from "./metadata-log.js";
import { type MetadataSource, MetadataWriter, type PendingMetadata } from "./metadata-writer.js";
import { openPoolDevice, type PoolDevice } from "./pool-device.js";
import { ReadTracker } from "./read-tracker.js";
import { rebuildState } from "./recovery.js";
import { type AdmitReservation, type Reservations, reservationOf, sumReservations } from "./reservations.js";
import type { ScratchRegion } from "./scratch.js";
import {
  MAX_CHAIN_LAYERS,
  MAX_SNAPSHOTS,
  MAX_VOLUMES,
  validateLabels,
  validateReplicas,
  validateSizeBytes,
  validateSnapshotName,
  validateVolumeName,
} from "./validation.js";
import { Snapshot, snapshotExportName, Volume } from "./volume.js";

const debug = createDebug("keelson:store");

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
  /** Judges QoS reservations before a volume's policy is stored; absent: every reservation is accepted. */
  admit?: AdmitReservation;
}

/** Space of a pool, in bytes. */
export interface PoolSpace {
  totalBytes: number;
  allocatedBytes: number;
  freeBytes: number;
}

/** What a clone is made from. */
export type CloneSource = { snapshot: { volumeName: string; name: string } } | { volumeName: string };

/** Request of {@link Pool.createVolume}. */
export interface CreateVolumeOptions {
  name: string;
  /** Required for an empty volume; for a clone, 0 or absent means the source's size, and smaller fails. */
  sizeBytes?: number;
  labels?: Record<string, string>;
  replicas?: number;
  /** Makes the volume a clone sharing the source's data. */
  source?: CloneSource;
  /** Limits, reservation and weight (validated by the caller); the reservation is admitted against the disk. */
  qos?: QosPolicyRecord;
  /** The QoS class `qos` came from. */
  qosClass?: string;
}

/** Request of {@link Pool.createSnapshot}. */
export interface CreateSnapshotOptions {
  volumeName: string;
  name: string;
  labels?: Record<string, string>;
}

function notFound(name: string): KeelsonError {
  return new KeelsonError({ code: "VOLUME_NOT_FOUND", message: `volume ${JSON.stringify(name)} does not exist` });
}

function snapshotNotFound(volumeName: string, name: string): KeelsonError {
  return new KeelsonError({
    code: "SNAPSHOT_NOT_FOUND",
    message: `snapshot ${JSON.stringify(name)} of volume ${JSON.stringify(volumeName)} does not exist`,
  });
}

function inUse(what: string, handles: number): KeelsonError {
  return new KeelsonError({
    code: "VOLUME_IN_USE",
    message: `${what} has ${handles} open connection(s); disconnect them first`,
  });
}

function sameLabels(a: Record<string, string>, b: Record<string, string>): boolean {
  return JSON.stringify(a) === JSON.stringify(b);
}

function byName<T extends { name: string }>(a: T, b: T): number {
  return a.name < b.name ? -1 : a.name > b.name ? 1 : 0;
}

function readSuperblock(device: PoolDevice, forceFormat: boolean, extentSizeBytes: number): PoolLayout {
  const head = Buffer.alloc(SUPERBLOCK_SIZE_BYTES);
  fs.readSync(device.fd, head, 0, head.length, 0);
  const found = decodeSuperblock(head);
  if (found.kind === "formatted" && !forceFormat) return found.layout;
  if (found.kind === "foreign" && !forceFormat) {
    throw new KeelsonError({
      code: "INVALID_ARGUMENT",
      message: `${device.path} holds data that is not a keelson pool; refusing to format it without --force-format`,
    });
  }
  const layout = planLayout(device.sizeBytes, randomUUID(), extentSizeBytes);
  fs.writeSync(device.fd, encodeSuperblock(layout), 0, SUPERBLOCK_SIZE_BYTES, 0);
  fs.fdatasyncSync(device.fd);
  debug("formatted %s: %d extents", device.path, layout.extentCount);
  return layout;
}

/**
 * A disk pool: thin volumes and their snapshots as a tree of layers on one
 * block device or file, with its metadata (checkpoints and a journal) on the
 * same device. A layer lives while a volume head, a snapshot or a child layer
 * needs it; a layer nothing names any more is dropped, or folded into its
 * only child, by {@link Pool.collect}.
 */
export class Pool implements MetadataSource {
  readonly device: PoolDevice;
  readonly layout: PoolLayout;
  readonly allocator: ExtentAllocator;
  /** Reads in flight, so freed extents are reused only after reads that may still hit them. */
  readonly reads = new ReadTracker();
  /** Bytes of block states per extent entry. */
  readonly stateBytes: number;
  readonly #writer: MetadataWriter;
  readonly #volumes = new Map<string, Volume>();
  /** Snapshots by export name (`VOLUME@SNAPSHOT`). */
  readonly #snapshots = new Map<string, Snapshot>();
  readonly #layers = new Map<number, Layer>();
  #nextLayerId: number;
  /** Catalog changes since the last commit began. */
  #changes: CatalogChange[] = [];
  /** Entries changed since the last commit began. */
  #dirty = new Set<EntryRecord>();
  /** Entries with state (data or zero markers), bounded by the checkpoint slot. */
  entryCount: number;
  /** Control operations run one at a time, in arrival order (they await folds and commits). */
  #control: Promise<unknown> = Promise.resolve();
  /** Layer folds a crash had interrupted, finished by {@link Pool.open}. */
  foldsFinishedAtOpen = 0;
  /** What the disk can do (calibrated or operator-set); reservations are admitted against it. */
  disk: DiskCapabilityRecord | undefined;
  /** Extents released since open; deletes report what they freed from its growth. */
  #releasedExtents = 0;
  #closed = false;
  /** The admission rule reservations are judged by (see {@link OpenPoolOptions.admit}). */
  readonly #admit: AdmitReservation;

  private constructor(device: PoolDevice, layout: PoolLayout, admit: AdmitReservation) {
    this.device = device;
    this.#admit = admit;
    this.layout = layout;
    this.stateBytes = stateBytesOf(layout.extentSizeBytes);
    const recovered = recoverMetadata(device.fd, layout);
    const state = rebuildState(recovered, layout);
    this.#nextLayerId = state.nextLayerId;
    this.entryCount = state.entryCount;
    this.disk = state.disk;
    for (const [id, layer] of state.layers) this.#layers.set(id, layer);
    for (const record of state.volumes.values())
      this.#volumes.set(record.name, new Volume(record, this.#chainOf(record.headLayerId)));
    for (const record of state.snapshots) {
      const snap = new Snapshot(record, this.#chainOf(record.layerId));
      this.#snapshots.set(snap.name, snap);
    }
    const inUse: number[] = [];
    for (const layer of this.#layers.values()) for (const e of layer.extents.values()) if (e.phys >= 0) inUse.push(e.phys);
    this.allocator = new ExtentAllocator(layout.extentCount, inUse);
    this.#writer = new MetadataWriter(device.fd, layout, this, {
      nextSeq: recovered.nextSeq,
      tailBytes: recovered.journalTailBytes,
      activeSlot: recovered.checkpoint?.slot ?? 1,
    });
    debug("opened %s: %d volumes, %d batches replayed", device.path, this.#volumes.size, recovered.batches.length);
  }

  /**
   * Opens (formatting when blank) the pool on `options.path`, then finishes
   * any layer fold a crash interrupted.
   */
  static async open(options: OpenPoolOptions): Promise<Pool> {
    const device = openPoolDevice(options);
    let pool: Pool;
    try {
      const layout = readSuperblock(device, options.forceFormat ?? false, options.extentSizeBytes ?? DEFAULT_EXTENT_SIZE_BYTES);
      if (layout.sizeBytes > device.sizeBytes) {
        throw new KeelsonError({
          code: "METADATA_CORRUPT",
          message: `${device.path} is ${device.sizeBytes} bytes but its pool was formatted for ${layout.sizeBytes}`,
        });
      }
      pool = new Pool(device, layout, options.admit ?? (() => undefined));
    } catch (error) {
      device.close();
      throw error;
    }
    try {
      await pool.#serial(() => pool.#collectAll());
    } catch (error) {
      await pool.close().catch(() => undefined);
      throw error;
    }
    return pool;
  }

  #chainOf(layerId: number): Layer[] {
    const chain: Layer[] = [];
    for (let id: number | null = layerId; id !== null; ) {
      const layer = this.#layers.get(id);
      if (!layer) throw new KeelsonError({ code: "METADATA_CORRUPT", message: `layer chain misses layer ${id}` });
      chain.push(layer);
      if (chain.length > this.#layers.size) throw new KeelsonError({ code: "METADATA_CORRUPT", message: "layer chain loops" });
      id = layer.parentId;
    }
    return chain;
  }

  /** Recomputes every volume's and snapshot's chain after the layer tree changed. */
  #relink(): void {
    for (const v of this.#volumes.values()) v.chain = this.#chainOf(v.record.headLayerId);
    for (const s of this.#snapshots.values()) s.chain = this.#chainOf(s.record.layerId);
  }

  #serial<T>(op: () => Promise<T>): Promise<T> {
    const run = this.#control.then(op, op);
    this.#control = run.catch(() => undefined);
    return run;
  }

  /** The pool's fatal failure (a failed fsync), if any. */
  get failure(): KeelsonError | null {
    return this.#writer.failure;
  }

  space(): PoolSpace {
    const totalBytes = this.layout.extentCount * this.layout.extentSizeBytes;
    const freeBytes = this.allocator.freeCount * this.layout.extentSizeBytes;
    return { totalBytes, freeBytes, allocatedBytes: totalBytes - freeBytes };
  }

  /** Pool bytes held by one layer alone (a volume's head, a snapshot's layer). */
  layerBytes(layer: Layer): number {
    return layer.allocatedExtents * this.layout.extentSizeBytes;
  }

  /** Volumes ordered by name. */
  listVolumes(): Volume[] {
    return [...this.#volumes.values()].sort(byName);
  }

  /** The volume named `name`; VOLUME_NOT_FOUND when there is none. */
  getVolume(name: string): Volume {
    const volume = this.#volumes.get(name);
    if (!volume) throw notFound(name);
    return volume;
  }

  /** The volume named `name`, or undefined. */
  findVolume(name: string): Volume | undefined {
    return this.#volumes.get(name);
  }

  /** Snapshots ordered by export name; only those taken of `volumeName` when given. */
  listSnapshots(volumeName?: string): Snapshot[] {
    const all = [...this.#snapshots.values()].sort(byName);
    return volumeName === undefined ? all : all.filter((s) => s.record.volumeName === volumeName);
  }

  /** One snapshot; SNAPSHOT_NOT_FOUND when there is none. */
  getSnapshot(volumeName: string, name: string): Snapshot {
    const snap = this.#snapshots.get(snapshotExportName(volumeName, name));
    if (!snap) throw snapshotNotFound(volumeName, name);
    return snap;
  }

  /** A snapshot by export name `VOLUME@SNAPSHOT`, or undefined. */
  findSnapshot(exportName: string): Snapshot | undefined {
    return this.#snapshots.get(exportName);
  }

  /** The newest snapshot below `snap` in its chain (its parent snapshot), if any. */
  parentSnapshotOf(snap: Snapshot): Snapshot | undefined {
    const byLayer = new Map<number, Snapshot>();
    for (const s of this.#snapshots.values()) if (!byLayer.has(s.record.layerId)) byLayer.set(s.record.layerId, s);
    for (const layer of snap.chain.slice(1)) {
      const found = byLayer.get(layer.id);
      if (found) return found;
    }
    return undefined;
  }

  #newLayer(parent: Layer | null, volumeUid: string): Layer {
    const layer = new Layer({ id: this.#nextLayerId++, parentId: parent ? parent.id : null, volumeUid });
    if (parent) parent.children++;
    this.#layers.set(layer.id, layer);
    this.#changes.push({ op: "putLayer", layer: layer.record });
    return layer;
  }

  /**
   * Creates a volume, empty or as a clone (durable before it returns).
   * Idempotent: the same name, size, labels, replicas and source return the
   * existing volume; anything different fails with ALREADY_EXISTS.
   */
  createVolume(options: CreateVolumeOptions): Promise<Volume> {
    return this.#serial(() => this.#createVolume(options));
  }

  async #createVolume(options: CreateVolumeOptions): Promise<Volume> {
    const name = validateVolumeName(options.name);
    const labels = validateLabels(options.labels ?? {});
    const replicas = validateReplicas(options.replicas);
    const source = options.source ? this.#resolveSource(options.source) : null;
    const sizeBytes = this.#cloneSize(options.sizeBytes, source?.sizeBytes);
    const existing = this.#volumes.get(name);
    if (existing) return this.#sameVolume(existing, sizeBytes, labels, replicas, source?.record, options);
    if (this.#volumes.size >= MAX_VOLUMES) {
      throw new KeelsonError({ code: "LIMIT_EXCEEDED", message: `pool holds its maximum of ${MAX_VOLUMES} volumes` });
    }
    const uid = randomUUID();
    this.#admit({ diskPath: this.device.path, disk: this.disk, reserved: this.reserved(), wanted: reservationOf(options.qos) });
    const create = async (parent: Layer | null): Promise<Volume> => {
      const head = this.#newLayer(parent, uid);
      const record: VolumeRecord = { uid, name, sizeBytes, createdAtMs: Date.now(), labels, replicas, headLayerId: head.id };
      if (source) record.source = source.record;
      if (options.qos) record.qos = options.qos;
      if (options.qosClass) record.qosClass = options.qosClass;
      const volume = new Volume(record, this.#chainOf(head.id));
      this.#volumes.set(name, volume);
      this.#changes.push({ op: "putVolume", volume: record });
      await this.flush();
      return volume;
    };
    return source ? source.withBase(create) : create(null);
  }

  #cloneSize(requested: number | undefined, sourceSize: number | undefined): number {
    if (sourceSize === undefined || (requested !== undefined && requested !== 0)) {
      const size = validateSizeBytes(requested);
      if (sourceSize !== undefined && size < sourceSize) {
        throw new KeelsonError({
          code: "INVALID_ARGUMENT",
          message: `a clone must be at least its source's size ${sourceSize} bytes; requested ${size}`,
        });
      }
      return size;
    }
    return sourceSize;
  }

  /** Names the clone source and, when the clone is created, gives the layer the clone reads through. */
  #resolveSource(source: CloneSource): {
    record: VolumeSource;
    sizeBytes: number;
    /** Runs `use` with the layer the clone reads through (for a live volume, while its head is sealed). */
    withBase: <T>(use: (base: Layer) => Promise<T>) => Promise<T>;
  } {
    if ("snapshot" in source) {
      const snap = this.getSnapshot(source.snapshot.volumeName, source.snapshot.name);
      const r = snap.record;
      this.#checkDepth(snap.chain.length + 1, `clone of ${snap.name}`);
      return {
        record: { kind: "snapshot", volumeName: r.volumeName, snapshotName: r.name, snapshotUid: r.uid },
        sizeBytes: r.sizeBytes,
        withBase: (use) => use(snap.layer),
      };
    }
    const vol = this.getVolume(source.volumeName);
    this.#checkDepth(vol.chain.length + 1, `clone of volume ${vol.name}`);
    return {
      record: { kind: "volume", volumeName: vol.name, volumeUid: vol.record.uid },
      sizeBytes: vol.sizeBytes,
      // An implicit snapshot: the volume's head is sealed as a hidden layer that both read through.
      withBase: (use) => this.#sealHead(vol, use),
    };
  }

  #checkDepth(layers: number, what: string): void {
    if (layers <= MAX_CHAIN_LAYERS) return;
    throw new KeelsonError({
      code: "LIMIT_EXCEEDED",
      message: `${what} would read through ${layers} layers; at most ${MAX_CHAIN_LAYERS} (delete older snapshots to fold them)`,
    });
  }

  #sameVolume(
    v: Volume,
    sizeBytes: number,
    labels: Record<string, string>,
    replicas: number,
    source: VolumeSource | undefined,
    options: CreateVolumeOptions,
  ): Volume {
    const same =
      v.sizeBytes === sizeBytes &&
      v.record.replicas === replicas &&
      sameLabels(v.record.labels, labels) &&
      JSON.stringify(v.record.source ?? null) === JSON.stringify(source ?? null) &&
      (v.record.qosClass ?? "") === (options.qosClass ?? "") &&
      JSON.stringify(v.record.qos ?? absentQosPolicy()) === JSON.stringify(options.qos ?? absentQosPolicy());
    if (same) return v;
    throw new KeelsonError({
      code: "ALREADY_EXISTS",
      message: `volume ${v.name} exists with sizeBytes ${v.sizeBytes}, replicas ${v.record.replicas}, labels ${JSON.stringify(v.record.labels)} and source ${JSON.stringify(v.record.source ?? null)}; requested sizeBytes ${sizeBytes}, replicas ${replicas}, labels ${JSON.stringify(labels)}, source ${JSON.stringify(source ?? null)}`,
    });
  }

  /**
   * Seals the volume's head, gives it a new, empty one, and runs `whileSealed`
   * with the sealed layer before any write reaches the new head. Writes in
   * flight finish first (the gate is taken exclusively), so the sealed layer
   * holds every write completed before the switch and no part of any later
   * one; later writes wait until `whileSealed` (which commits) is done, so no
   * write is acknowledged between the switch and the durable snapshot.
   */
  #sealHead<T>(volume: Volume, whileSealed: (sealed: Layer) => Promise<T>): Promise<T> {
    return new Promise<T>((resolve, reject) => {
      volume.gate.enterExclusive(() => {
        const sealed = volume.head;
        const head = this.#newLayer(sealed, volume.record.uid);
        volume.record = { ...volume.record, headLayerId: head.id };
        volume.chain = [head, ...volume.chain];
        this.#changes.push({ op: "putVolume", volume: volume.record });
        // The gate opens a turn after the caller has the result: a reply the caller
        // sends at once (the gRPC answer) then usually leaves before the first later
        // write is acknowledged. Across two connections that order cannot be promised.
        const reopen = (): void => {
          setImmediate(() => volume.gate.leaveExclusive());
        };
        whileSealed(sealed).then(
          (value) => {
            resolve(value);
            reopen();
          },
          (error: unknown) => {
            reject(error);
            reopen();
          },
        );
      });
    });
  }

  /**
   * Takes a snapshot: O(1), no data is copied. Every write completed before
   * the call returns is in it, and no write is partly in it. Durable before
   * it returns. Idempotent: the same volume, name and labels return the
   * existing snapshot; other labels fail with ALREADY_EXISTS.
   */
  createSnapshot(options: CreateSnapshotOptions): Promise<Snapshot> {
    return this.#serial(() => this.#createSnapshot(options));
  }

  async #createSnapshot(options: CreateSnapshotOptions): Promise<Snapshot> {
    const volume = this.getVolume(validateVolumeName(options.volumeName));
    const name = validateSnapshotName(options.name);
    const labels = validateLabels(options.labels ?? {});
    const existing = this.#snapshots.get(snapshotExportName(volume.name, name));
    if (existing) {
      if (existing.record.volumeUid !== volume.record.uid) {
        throw new KeelsonError({
          code: "ALREADY_EXISTS",
          message: `snapshot ${existing.name} exists from an earlier volume named ${volume.name}; delete it or pick another name`,
        });
      }
      if (sameLabels(existing.record.labels, labels)) return existing;
      throw new KeelsonError({
        code: "ALREADY_EXISTS",
        message: `snapshot ${existing.name} exists with labels ${JSON.stringify(existing.record.labels)}; requested ${JSON.stringify(labels)}`,
      });
    }
    if (this.#snapshots.size >= MAX_SNAPSHOTS) {
      throw new KeelsonError({ code: "LIMIT_EXCEEDED", message: `pool holds its maximum of ${MAX_SNAPSHOTS} snapshots` });
    }
    this.#checkDepth(volume.chain.length + 1, `snapshot of volume ${volume.name}`);
    return this.#sealHead(volume, async (layer) => {
      const record: SnapshotRecord = {
        uid: randomUUID(),
        name,
        volumeName: volume.name,
        volumeUid: volume.record.uid,
        layerId: layer.id,
        sizeBytes: volume.sizeBytes,
        createdAtMs: Date.now(),
        labels,
      };
      const snap = new Snapshot(record, this.#chainOf(layer.id));
      this.#snapshots.set(snap.name, snap);
      this.#changes.push({ op: "putSnapshot", snapshot: record });
      await this.flush();
      return snap;
    });
  }

  /**
   * Deletes a snapshot; its data is folded into the layer above it while I/O
   * continues. SNAPSHOT_NOT_FOUND when absent; VOLUME_IN_USE while its export
   * is open. Returns the bytes given back to the pool.
   */
  deleteSnapshot(volumeName: string, name: string): Promise<number> {
    return this.#serial(async () => {
      const snap = this.getSnapshot(volumeName, name);
      if (snap.openHandles > 0) throw inUse(`snapshot ${snap.name}`, snap.openHandles);
      const free0 = this.#releasedExtents;
      snap.deleted = true;
      this.#snapshots.delete(snap.name);
      this.#changes.push({ op: "deleteSnapshot", uid: snap.record.uid });
      await this.flush();
      await this.#collect(snap.layer);
      await this.flush();
      return (this.#releasedExtents - free0) * this.layout.extentSizeBytes;
    });
  }

  /**
   * Puts a volume back to a snapshot of it: its data and size become the
   * snapshot's. The volume must have no open connections (VOLUME_IN_USE):
   * a connected client would keep cached blocks of the discarded data, and a
   * mounted filesystem would be corrupted under its feet. Durable on return.
   */
  revertVolume(volumeName: string, snapshotName: string): Promise<Volume> {
    return this.#serial(async () => {
      const volume = this.getVolume(volumeName);
      const snap = this.getSnapshot(volumeName, snapshotName);
      if (snap.record.volumeUid !== volume.record.uid) {
        throw new KeelsonError({
          code: "INVALID_ARGUMENT",
          message: `snapshot ${snap.name} was taken of an earlier volume named ${volumeName}; clone it instead`,
        });
      }
      if (volume.openHandles > 0) throw inUse(`volume ${volumeName}`, volume.openHandles);
      const old = volume.head;
      const head = this.#newLayer(snap.layer, volume.record.uid);
      volume.record = { ...volume.record, headLayerId: head.id, sizeBytes: snap.sizeBytes };
      this.#changes.push({ op: "putVolume", volume: volume.record });
      const parent = this.#unlinkLeaf(old);
      this.#relink();
      await this.flush();
      await this.#collect(parent);
      await this.flush();
      return volume;
    });
  }

  /**
   * Deletes a volume and frees its space once the deletion is durable. Its
   * snapshots stay (their layers are kept). VOLUME_NOT_FOUND when absent;
   * VOLUME_IN_USE while export handles are open. Returns the bytes freed.
   */
  deleteVolume(name: string): Promise<number> {
    return this.#serial(async () => {
      const volume = this.getVolume(name);
      if (volume.openHandles > 0) {
        throw new KeelsonError({
          code: "VOLUME_IN_USE",
          message: `volume ${name} has ${volume.openHandles} open connection(s); disconnect them or delete with force`,
        });
      }
      const free0 = this.#releasedExtents;
      volume.deleted = true;
      this.#volumes.delete(name);
      this.#changes.push({ op: "deleteVolume", uid: volume.record.uid });
      const parent = this.#unlinkLeaf(volume.head);
      this.#relink();
      await this.flush();
      await this.#collect(parent);
      await this.flush();
      return (this.#releasedExtents - free0) * this.layout.extentSizeBytes;
    });
  }

  /** Drops a layer nothing reads through; returns its parent (which lost a child). */
  #unlinkLeaf(layer: Layer): Layer | null {
    const parent = layer.parentId === null ? null : (this.#layers.get(layer.parentId) ?? null);
    if (parent) parent.children--;
    this.#dropLayer(layer);
    return parent;
  }

  /** Forgets a layer and releases its extents; the deleteLayer record covers all of its entries. */
  #dropLayer(layer: Layer): void {
    for (const entry of layer.extents.values()) {
      if (entry.phys >= 0) this.releaseExtent(entry.phys);
      this.#dirty.delete(entry);
      this.entryCount--;
    }
    layer.extents.clear();
    layer.allocatedExtents = 0;
    this.#layers.delete(layer.id);
    this.#changes.push({ op: "deleteLayer", id: layer.id });
  }

  /** True when no volume head and no snapshot names the layer. */
  #isHidden(layer: Layer): boolean {
    for (const v of this.#volumes.values()) if (v.record.headLayerId === layer.id) return false;
    for (const s of this.#snapshots.values()) if (s.record.layerId === layer.id) return false;
    return true;
  }

  /**
   * Garbage-collects from `layer` down: a hidden layer with no child is
   * dropped (and its parent looked at next); one with a single child is
   * folded into it; one with more children stays until they are gone.
   */
  async #collect(start: Layer | null): Promise<void> {
    for (let layer = start; layer !== null && this.#layers.has(layer.id) && this.#isHidden(layer); ) {
      if (layer.children === 0) {
        layer = this.#unlinkLeaf(layer);
        this.#relink();
        continue;
      }
      if (layer.children === 1) await this.#fold(layer);
      return;
    }
  }

  /** Collects every hidden layer (at open: finishes folds a crash interrupted). */
  async #collectAll(): Promise<void> {
    for (const layer of [...this.#layers.values()]) {
      if (!this.#layers.has(layer.id) || layer.children > 1 || !this.#isHidden(layer)) continue;
      if (layer.children === 1) this.foldsFinishedAtOpen++;
      await this.#collect(layer);
    }
    await this.flush();
  }

  async #fold(layer: Layer): Promise<void> {
    const child = [...this.#layers.values()].find((l) => l.parentId === layer.id) as Layer;
    const volume = [...this.#volumes.values()].find((v) => v.record.headLayerId === child.id);
    const store: FoldStore = {
      fd: this.device.fd,
      dataOffset: this.layout.dataOffset,
      extentSizeBytes: this.layout.extentSizeBytes,
      stateBytes: this.stateBytes,
      markDirty: (entry) => this.markDirty(entry),
      releaseExtent: (phys) => this.releaseExtent(phys),
      entryGone: () => {
        this.entryCount--;
      },
    };
    debug("folding layer %d (%d extents) into %d", layer.id, layer.extents.size, child.id);
    await foldIntoChild(store, layer, child, volume ? volume.gate : null);
    child.record = { ...child.record, parentId: layer.parentId };
    this.#changes.push({ op: "putLayer", layer: child.record });
    this.#dropLayer(layer);
    this.#relink();
  }

  /**
   * Fences the volume at `epoch`: from now on only I/O under this epoch or a
   * newer one is served, so a frontend holding an older attachment can get
   * nothing more acknowledged. Durable before it returns. Idempotent for the
   * current epoch; EPOCH_STALE for an older one.
   */
  fenceVolume(name: string, epoch: number): Promise<Volume> {
    return this.#serial(async () => {
      const volume = this.getVolume(name);
      if (!Number.isSafeInteger(epoch) || epoch < 1) {
        throw new KeelsonError({ code: "INVALID_ARGUMENT", message: `invalid epoch ${epoch}: a positive integer` });
      }
      const current = volume.record.epoch ?? 0;
      if (epoch < current) {
        throw new KeelsonError({
          code: "EPOCH_STALE",
          message: `volume ${name} is fenced at epoch ${current}; epoch ${epoch} is stale`,
        });
      }
      if (epoch === current) return volume;
      volume.record = { ...volume.record, epoch };
      this.#changes.push({ op: "putVolume", volume: volume.record });
      await this.flush();
      return volume;
    });
  }

  /** Reservations admitted on this disk, leaving out the volume `exceptUid`. */
  reserved(exceptUid?: string): Reservations {
    return sumReservations(
      [...this.#volumes.values()].map((v) => v.record),
      exceptUid,
    );
  }

  /**
   * Replaces a volume's QoS policy (durable before it returns). A larger
   * reservation is admitted against the disk first (QOS_ADMISSION_DENIED).
   * Idempotent.
   */
  setVolumeQos(name: string, qos: QosPolicyRecord, qosClass: string | undefined): Promise<Volume> {
    return this.#serial(async () => {
      const volume = this.getVolume(name);
      const reserved = this.reserved(volume.record.uid);
      this.#admit({ diskPath: this.device.path, disk: this.disk, reserved, wanted: reservationOf(qos) });
      const { qos: _q, qosClass: _c, ...rest } = volume.record;
      volume.record = { ...rest, qos, ...(qosClass ? { qosClass } : {}) };
      this.#changes.push({ op: "putVolume", volume: volume.record });
      await this.flush();
      return volume;
    });
  }

  /** Records the disk's capability (calibration or operator); durable before it returns. */
  setDiskCapability(disk: DiskCapabilityRecord): Promise<void> {
    return this.#serial(async () => {
      this.disk = disk;
      this.#changes.push({ op: "putDisk", disk });
      await this.flush();
    });
  }

  /**
   * Lends free extents as a scratch region for `use` (calibration writes
   * there), then frees them. Runs with control operations held off.
   */
  withScratch<T>(maxBytes: number, use: (region: ScratchRegion) => Promise<T>): Promise<T> {
    return this.#serial(async () => {
      // The longest run of consecutive free extents from the top of the free stack.
      const taken: number[] = [];
      const wanted = Math.max(1, Math.floor(maxBytes / this.layout.extentSizeBytes));
      for (let i = 0; i < wanted; i++) {
        const phys = this.allocator.allocate();
        if (phys < 0 || (taken.length > 0 && phys !== (taken[taken.length - 1] as number) + 1)) {
          if (phys >= 0) this.allocator.release(phys);
          break;
        }
        taken.push(phys);
      }
      if (taken.length === 0) throw new KeelsonError({ code: "NO_SPACE", message: "no free extent to calibrate the disk on" });
      try {
        const offset = this.layout.dataOffset + (taken[0] as number) * this.layout.extentSizeBytes;
        return await use({ fd: this.device.fd, offset, bytes: taken.length * this.layout.extentSizeBytes });
      } finally {
        for (const phys of taken) this.allocator.release(phys);
        await this.flush();
      }
    });
  }

  /** Grows a volume, online (durable before it returns). Idempotent; SHRINK_NOT_SUPPORTED for a smaller size. */
  resizeVolume(name: string, sizeBytesIn: number): Promise<Volume> {
    return this.#serial(async () => {
      const volume = this.getVolume(name);
      const sizeBytes = validateSizeBytes(sizeBytesIn);
      if (sizeBytes < volume.sizeBytes) {
        throw new KeelsonError({
          code: "SHRINK_NOT_SUPPORTED",
          message: `volume ${name} is ${volume.sizeBytes} bytes; shrinking to ${sizeBytes} is not supported`,
        });
      }
      if (sizeBytes === volume.sizeBytes) return volume;
      volume.record = { ...volume.record, sizeBytes };
      this.#changes.push({ op: "putVolume", volume: volume.record });
      await this.flush();
      return volume;
    });
  }

  /** Makes every change and completed write so far durable (group commit). */
  flush(): Promise<void> {
    if (this.#closed) return Promise.reject(new KeelsonError({ code: "UNAVAILABLE", message: "pool is closed" }));
    return this.#writer.commit();
  }

  /** Waits for running control operations, writes a final checkpoint and closes the device. Idempotent. */
  async close(): Promise<void> {
    if (this.#closed) return;
    await this.#control;
    if (this.#closed) return;
    try {
      if (!this.#writer.failure) await this.#writer.checkpoint();
    } finally {
      this.#closed = true;
      this.device.close();
    }
  }

  /**
   * Closes the device without a commit or checkpoint, leaving the pool as a
   * killed process would (tests of crash recovery in one process).
   */
  abandon(): void {
    if (this.#closed) return;
    this.#closed = true;
    this.device.close();
  }

  // ---- used by volume I/O ----

  /** Marks an entry changed so the next commit records it. */
  markDirty(entry: EntryRecord): void {
    this.#dirty.add(entry);
  }

  /** Frees a physical extent once the next commit is durable. */
  releaseExtent(phys: number): void {
    this.allocator.release(phys);
    this.#releasedExtents++;
  }

  /** Adds an empty entry for `logical` to `layer` (no physical extent yet). */
  addEntry(layer: Layer, logical: number): ExtentEntry {
    const entry = new ExtentEntry(layer.id, logical, -1, newStates(this.stateBytes));
    layer.extents.set(logical, entry);
    this.entryCount++;
    return entry;
  }

  /** Drops an entry that holds nothing; its record (phys -1, no states) removes it at replay. */
  removeEntry(layer: Layer, entry: ExtentEntry): void {
    layer.extents.delete(entry.logical);
    this.entryCount--;
    this.#dirty.add(entry);
  }

  // ---- MetadataSource ----

  takePending(): PendingMetadata {
    const pending = { changes: this.#changes, entries: [...this.#dirty], quarantine: this.allocator.takeQuarantine() };
    this.#changes = [];
    this.#dirty = new Set();
    return pending;
  }

  restorePending(pending: PendingMetadata): void {
    this.#changes = [...pending.changes, ...this.#changes];
    const dirty = new Set<EntryRecord>(pending.entries);
    for (const e of this.#dirty) dirty.add(e);
    this.#dirty = dirty;
    this.allocator.requarantine(pending.quarantine);
  }

  snapshot(): { catalog: CatalogSnapshot; entries: EntryRecord[] } {
    const catalog: CatalogSnapshot = {
      nextLayerId: this.#nextLayerId,
      volumes: [...this.#volumes.values()].map((v) => v.record),
      layers: [...this.#layers.values()].map((l): LayerRecord => l.record),
      snapshots: [...this.#snapshots.values()].map((s) => s.record),
      ...(this.disk ? { disk: this.disk } : {}),
    };
    const entries: EntryRecord[] = [];
    for (const layer of this.#layers.values()) for (const e of layer.extents.values()) entries.push(e);
    return { catalog, entries };
  }

  reclaim(extents: readonly number[]): void {
    if (extents.length === 0) return;
    this.reads.afterCurrentReads(() => this.allocator.reclaim(extents));
  }
}
