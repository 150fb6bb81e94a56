import { randomUUID } from "node:crypto";
import fs from "node:fs";
import { KeelsonError } from "@keelson/sdk";
import createDebug from "debug";
import { newStates } from "./block-states.js";
import type { CatalogChange, CatalogSnapshot, EntryRecord, VolumeRecord } from "./catalog.js";
import { ExtentAllocator } from "./extent-allocator.js";
import { ExtentEntry, Layer } from "./layer.js";
import {
  decodeSuperblock,
  EXTENT_SIZE_BYTES,
  encodeSuperblock,
  type PoolLayout,
  planLayout,
  SUPERBLOCK_SIZE_BYTES,
} from "./layout.js";
import { recoverMetadata } from "./metadata-log.js";
import { type MetadataSource, MetadataWriter, type PendingMetadata } from "./metadata-writer.js";
import { openPoolDevice, type PoolDevice } from "./pool-device.js";
import { rebuildState } from "./recovery.js";
import { MAX_VOLUMES, validateLabels, validateReplicas, validateSizeBytes, validateVolumeName } from "./validation.js";
import { Volume } from "./volume.js";

const debug = createDebug("keelson:store");

/** Options of {@link Pool.open}. */
export interface OpenPoolOptions {
  /** Block device or file holding the pool. */
  path: string;
  /** Create a sparse file of this size when `path` does not exist. */
  createSizeBytes?: number;
  /** Format a device that holds something other than a keelson pool (destroys it). Blank devices are always formatted. */
  forceFormat?: boolean;
}

/** Space of a pool, in bytes. */
export interface PoolSpace {
  totalBytes: number;
  allocatedBytes: number;
  freeBytes: number;
}

/** Request of {@link Pool.createVolume}. */
export interface CreateVolumeOptions {
  name: string;
  sizeBytes: number;
  labels?: Record<string, string>;
  replicas?: number;
}

function notFound(name: string): KeelsonError {
  return new KeelsonError({ code: "VOLUME_NOT_FOUND", message: `volume ${JSON.stringify(name)} does not exist` });
}

function readSuperblock(device: PoolDevice, forceFormat: boolean): PoolLayout {
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
  const layout = planLayout(device.sizeBytes, randomUUID());
  fs.writeSync(device.fd, encodeSuperblock(layout), 0, SUPERBLOCK_SIZE_BYTES, 0);
  fs.fdatasyncSync(device.fd);
  debug("formatted %s: %d extents", device.path, layout.extentCount);
  return layout;
}

/**
 * A disk pool: thin volumes as chains of layers on one block device or file,
 * with its metadata (checkpoints and a journal) on the same device.
 */
export class Pool implements MetadataSource {
  readonly device: PoolDevice;
  readonly layout: PoolLayout;
  readonly allocator: ExtentAllocator;
  readonly #writer: MetadataWriter;
  readonly #volumes = new Map<string, Volume>();
  readonly #layers = new Map<number, Layer>();
  #nextLayerId: number;
  /** Catalog changes since the last commit began. */
  #changes: CatalogChange[] = [];
  /** Entries changed since the last commit began. */
  #dirty = new Set<EntryRecord>();
  /** Entries with state (data or zero markers), bounded by the checkpoint slot. */
  entryCount: number;
  #closed = false;

  private constructor(device: PoolDevice, layout: PoolLayout) {
    this.device = device;
    this.layout = layout;
    const recovered = recoverMetadata(device.fd, layout);
    const state = rebuildState(recovered, layout);
    this.#nextLayerId = state.nextLayerId;
    this.entryCount = state.entryCount;
    for (const [id, layer] of state.layers) this.#layers.set(id, layer);
    for (const record of state.volumes.values()) this.#volumes.set(record.name, new Volume(record, this.#chainOf(record)));
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

  /** Opens (formatting when blank) the pool on `options.path`. */
  static async open(options: OpenPoolOptions): Promise<Pool> {
    const device = openPoolDevice(options);
    try {
      const layout = readSuperblock(device, options.forceFormat ?? false);
      if (layout.sizeBytes > device.sizeBytes) {
        throw new KeelsonError({
          code: "METADATA_CORRUPT",
          message: `${device.path} is ${device.sizeBytes} bytes but its pool was formatted for ${layout.sizeBytes}`,
        });
      }
      return new Pool(device, layout);
    } catch (error) {
      device.close();
      throw error;
    }
  }

  #chainOf(record: VolumeRecord): Layer[] {
    const chain: Layer[] = [];
    for (let id: number | null = record.headLayerId; id !== null; ) {
      const layer = this.#layers.get(id);
      if (!layer) throw new KeelsonError({ code: "METADATA_CORRUPT", message: `volume ${record.name} misses layer ${id}` });
      chain.push(layer);
      id = layer.record.parentId;
    }
    return chain;
  }

  /** The pool's fatal failure (a failed fsync), if any. */
  get failure(): KeelsonError | null {
    return this.#writer.failure;
  }

  space(): PoolSpace {
    const totalBytes = this.layout.extentCount * EXTENT_SIZE_BYTES;
    const freeBytes = this.allocator.freeCount * EXTENT_SIZE_BYTES;
    return { totalBytes, freeBytes, allocatedBytes: totalBytes - freeBytes };
  }

  /** Volumes ordered by name. */
  listVolumes(): Volume[] {
    return [...this.#volumes.values()].sort((a, b) => (a.name < b.name ? -1 : a.name > b.name ? 1 : 0));
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

  /**
   * Creates a volume (durable before it returns). Idempotent: the same name,
   * size, labels and replicas return the existing volume; anything different
   * fails with ALREADY_EXISTS.
   */
  async createVolume(options: CreateVolumeOptions): Promise<Volume> {
    const name = validateVolumeName(options.name);
    const sizeBytes = validateSizeBytes(options.sizeBytes);
    const labels = validateLabels(options.labels ?? {});
    const replicas = validateReplicas(options.replicas);
    const existing = this.#volumes.get(name);
    if (existing) return this.#sameVolume(existing, sizeBytes, labels, replicas);
    if (this.#volumes.size >= MAX_VOLUMES) {
      throw new KeelsonError({ code: "NO_SPACE", message: `pool holds its maximum of ${MAX_VOLUMES} volumes` });
    }
    const uid = randomUUID();
    const layer = new Layer({ id: this.#nextLayerId++, parentId: null, volumeUid: uid });
    const record: VolumeRecord = { uid, name, sizeBytes, createdAtMs: Date.now(), labels, replicas, headLayerId: layer.id };
    this.#layers.set(layer.id, layer);
    const volume = new Volume(record, [layer]);
    this.#volumes.set(name, volume);
    this.#changes.push({ op: "putLayer", layer: layer.record }, { op: "putVolume", volume: record });
    await this.flush();
    return volume;
  }

  #sameVolume(v: Volume, sizeBytes: number, labels: Record<string, string>, replicas: number): Volume {
    const same =
      v.sizeBytes === sizeBytes && v.record.replicas === replicas && JSON.stringify(v.record.labels) === JSON.stringify(labels);
    if (same) return v;
    throw new KeelsonError({
      code: "ALREADY_EXISTS",
      message: `volume ${v.name} exists with sizeBytes ${v.sizeBytes}, replicas ${v.record.replicas} and labels ${JSON.stringify(v.record.labels)}; requested sizeBytes ${sizeBytes}, replicas ${replicas}, labels ${JSON.stringify(labels)}`,
    });
  }

  /**
   * Deletes a volume and frees its space once the deletion is durable.
   * VOLUME_NOT_FOUND when absent; VOLUME_IN_USE while export handles are open.
   * Returns the bytes freed.
   */
  async deleteVolume(name: string): Promise<number> {
    const volume = this.getVolume(name);
    if (volume.openHandles > 0) {
      throw new KeelsonError({
        code: "VOLUME_IN_USE",
        message: `volume ${name} has ${volume.openHandles} open connection(s); disconnect them or delete with force`,
      });
    }
    let freed = 0;
    for (const layer of volume.chain) {
      if (layer.record.volumeUid !== volume.record.uid) continue;
      freed += this.#dropLayer(layer);
    }
    volume.deleted = true;
    this.#volumes.delete(name);
    this.#changes.push({ op: "deleteVolume", uid: volume.record.uid });
    await this.flush();
    return freed * EXTENT_SIZE_BYTES;
  }

  /** Forgets a layer and releases its extents; the deleteLayer record covers all of its entries. */
  #dropLayer(layer: Layer): number {
    let freed = 0;
    for (const entry of layer.extents.values()) {
      if (entry.phys >= 0) {
        this.allocator.release(entry.phys);
        freed++;
      }
      this.#dirty.delete(entry);
      this.entryCount--;
    }
    layer.extents.clear();
    layer.allocatedExtents = 0;
    this.#layers.delete(layer.id);
    this.#changes.push({ op: "deleteLayer", id: layer.id });
    return freed;
  }

  /** Grows a volume (durable before it returns). Idempotent; SHRINK_NOT_SUPPORTED for a smaller size. */
  async resizeVolume(name: string, sizeBytesIn: number): Promise<Volume> {
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
  }

  /** Makes every change and completed write so far durable (group commit). */
  flush(): Promise<void> {
    if (this.#closed) return Promise.reject(new KeelsonError({ code: "UNAVAILABLE", message: "pool is closed" }));
    return this.#writer.commit();
  }

  /** Writes a final checkpoint and closes the device. Idempotent. */
  async close(): Promise<void> {
    if (this.#closed) return;
    try {
      if (!this.#writer.failure) await this.#writer.checkpoint();
    } finally {
      this.#closed = true;
      this.device.close();
    }
  }

  // ---- used by volume I/O ----

  /** Marks an entry changed so the next commit records it. */
  markDirty(entry: EntryRecord): void {
    this.#dirty.add(entry);
  }

  /** Adds an empty entry for `logical` to `layer` (no physical extent yet). */
  addEntry(layer: Layer, logical: number): ExtentEntry {
    const entry = new ExtentEntry(layer.id, logical, -1, newStates());
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
      layers: [...this.#layers.values()].map((l) => l.record),
    };
    const entries: EntryRecord[] = [];
    for (const layer of this.#layers.values()) for (const e of layer.extents.values()) entries.push(e);
    return { catalog, entries };
  }

  reclaim(extents: readonly number[]): void {
    this.allocator.reclaim(extents);
  }
}
