import { randomUUID } from "node:crypto";
import fs from "node:fs";
import { KeelsonError } from "@keelson/sdk";
import createDebug from "debug";
import { BlockAllocator, slabExtentsOf } from "./block-allocator.js";
import { newStates } from "./block-states.js";
import type {
  CatalogChange,
  CatalogSnapshot,
  DiskCapabilityRecord,
  EntryRecord,
  LayerRecord,
  SnapshotRecord,
  VolumeRecord,
} from "./catalog.js";
import { ExtentAllocator } from "./extent-allocator.js";
import { ExtentEntry, Layer } from "./layer.js";
import {
  decodeSuperblock,
  encodeSuperblock,
  type PoolLayout,
  planLayout,
  SUPERBLOCK_SIZE_BYTES,
  stateBytesOf,
} from "./layout.js";
import { recoverMetadata } from "./metadata-log.js";
import { reserveMetadataArea } from "./metadata-reserve.js";
import { type MetadataSource, MetadataWriter, type PendingMetadata, type Quarantine } from "./metadata-writer.js";
import { openPoolDevice, type PoolDevice } from "./pool-device.js";
import { ReadTracker } from "./read-tracker.js";
import { rebuildState } from "./recovery.js";
import type { AdmitReservation } from "./reservations.js";
import { Snapshot, snapshotExportName, Volume } from "./volume.js";

const debug = createDebug("keelson:store");

/** Longest a change committed "soon" waits for its commit. */
const COMMIT_SOON_MS = 1_000;
/** What {@link openPoolCore} needs (the device half of `OpenPoolOptions`). */
export interface OpenPoolCoreOptions {
  path: string;
  createSizeBytes?: number;
  forceFormat: boolean;
  extentSizeBytes: number;
  admit: AdmitReservation;
  overcommitPercent: number;
  directIo?: boolean | undefined;
}

/** The layout found on the device, or planned for a device formatted now (its superblock not yet written). */
function readSuperblock(
  device: PoolDevice,
  forceFormat: boolean,
  extentSizeBytes: number,
): { layout: PoolLayout; formatNow: boolean } {
  const head = Buffer.alloc(SUPERBLOCK_SIZE_BYTES);
  fs.readSync(device.fd, head, 0, head.length, 0);
  const found = decodeSuperblock(head);
  if (found.kind === "formatted" && !forceFormat) return { layout: found.layout, formatNow: false };
  if (found.kind === "foreign" && !forceFormat) {
    throw new KeelsonError({
      code: "INVALID_ARGUMENT",
      message: `${device.path} holds data that is not a keelson pool; refusing to format it without --force-format`,
    });
  }
  return { layout: planLayout(device.sizeBytes, randomUUID(), extentSizeBytes), formatNow: true };
}

function writeSuperblock(device: PoolDevice, layout: PoolLayout): void {
  fs.writeSync(device.fd, encodeSuperblock(layout), 0, SUPERBLOCK_SIZE_BYTES, 0);
  fs.fdatasyncSync(device.fd);
  debug("formatted %s: %d extents", device.path, layout.extentCount);
}

/**
 * Allocates a file pool's metadata area on the host filesystem (see
 * metadata-reserve.ts). A pool formatted now without room for it fails with
 * NO_SPACE before its superblock is written, so the next open formats it
 * again. An existing pool opens anyway, so its data stays readable; its
 * commits then fail NO_SPACE while one lands in a hole on a full host
 * filesystem, and the next open allocates what is missing.
 */
function reserveFileMetadata(device: PoolDevice, layout: PoolLayout, formatNow: boolean): void {
  if (device.isBlockDevice) return;
  try {
    reserveMetadataArea(device.fd, device.path, layout);
  } catch (error) {
    if (formatNow || !(error instanceof KeelsonError) || error.code !== "NO_SPACE") throw error;
    debug("opening %s without its whole metadata area allocated: %s", device.path, error.message);
  }
}

/** Opens the device (formatting it when blank) and rebuilds the pool's state from its metadata. */
export function openPoolCore(options: OpenPoolCoreOptions): PoolCore {
  const device = openPoolDevice(options);
  try {
    const { layout, formatNow } = readSuperblock(device, options.forceFormat, options.extentSizeBytes);
    if (layout.sizeBytes > device.sizeBytes) {
      throw new KeelsonError({
        code: "METADATA_CORRUPT",
        message: `${device.path} is ${device.sizeBytes} bytes but its pool was formatted for ${layout.sizeBytes}`,
      });
    }
    reserveFileMetadata(device, layout, formatNow);
    if (formatNow) writeSuperblock(device, layout);
    return new PoolCore(device, layout, options.admit, options.overcommitPercent);
  } catch (error) {
    device.close();
    throw error;
  }
}

/** Every physical block the layers' block maps hold, without collecting them (a big pool has many). */
function* mappedBlocks(layers: Map<number, Layer>): Generator<number> {
  for (const layer of layers.values()) {
    for (const e of layer.extents.values()) {
      if (e.blocks === null) continue;
      for (let i = 0; i < e.blocks.length; i++) if ((e.blocks[i] as number) >= 0) yield e.blocks[i] as number;
    }
  }
}

/**
 * The state of an open pool, shared by the store's operations and its I/O
 * path: the catalog in memory (volumes, snapshots, the layer tree), the
 * changes not yet committed, and the device. Store-internal: callers outside
 * `store/` use {@link Pool}, whose control operations run one at a time.
 */
export class PoolCore implements MetadataSource {
  readonly device: PoolDevice;
  readonly layout: PoolLayout;
  readonly allocator: ExtentAllocator;
  /** Physical blocks carved from extents (sub-extent allocation; unused on pools formatted without it). */
  readonly blocks: BlockAllocator;
  /** Reads in flight, so freed extents are reused only after reads that may still hit them. */
  readonly reads = new ReadTracker();
  /** Bytes of block states per extent entry. */
  readonly stateBytes: number;
  /** The admission rule reservations are judged by (see `OpenPoolOptions.admit`). */
  readonly admit: AdmitReservation;
  /** Provisioned size the pool may promise, in percent of its data capacity (see provisioning.ts). */
  readonly overcommitPercent: number;
  readonly volumes = new Map<string, Volume>();
  /** Snapshots by export name (`VOLUME@SNAPSHOT`). */
  readonly snapshots = new Map<string, Snapshot>();
  readonly layers = new Map<number, Layer>();
  /** Entries with state (data or zero markers), bounded by the checkpoint slot. */
  entryCount: number;
  /** What the disk can do (calibrated or operator-set); reservations are admitted against it. */
  disk: DiskCapabilityRecord | undefined;
  /** Layer folds a crash had interrupted, finished when the pool opened. */
  foldsFinishedAtOpen = 0;
  /** Extents released since open; deletes report what they freed from its growth. */
  releasedExtents = 0;
  /** Blocks (of block-mapped entries) released since open, likewise. */
  releasedBlocks = 0;

  /** Bytes of pool space released since open (extents and blocks). */
  get releasedBytes(): number {
    return this.releasedExtents * this.layout.extentSizeBytes + this.releasedBlocks * this.layout.blockSizeBytes;
  }
  closed = false;
  readonly #writer: MetadataWriter;
  #nextLayerId: number;
  /** Catalog changes since the last commit began. */
  #changes: CatalogChange[] = [];
  /** Entries changed since the last commit began. */
  #dirty = new Set<EntryRecord>();

  constructor(device: PoolDevice, layout: PoolLayout, admit: AdmitReservation, overcommitPercent: number) {
    this.device = device;
    this.layout = layout;
    this.admit = admit;
    this.overcommitPercent = overcommitPercent;
    this.stateBytes = stateBytesOf(layout.extentSizeBytes);
    const recovered = recoverMetadata(device.fd, layout);
    const state = rebuildState(recovered, layout);
    this.#nextLayerId = state.nextLayerId;
    this.entryCount = state.entryCount;
    this.disk = state.disk;
    for (const [id, layer] of state.layers) this.layers.set(id, layer);
    for (const record of state.volumes.values())
      this.volumes.set(record.name, new Volume(record, this.chainOf(record.headLayerId)));
    for (const record of state.snapshots) {
      const snap = new Snapshot(record, this.chainOf(record.layerId));
      this.snapshots.set(snap.name, snap);
    }
    const inUse: number[] = [];
    for (const layer of this.layers.values()) for (const e of layer.extents.values()) if (e.phys >= 0) inUse.push(e.phys);
    const blocksPerExtent = layout.extentSizeBytes / layout.blockSizeBytes;
    for (const slab of slabExtentsOf(mappedBlocks(this.layers), blocksPerExtent)) inUse.push(slab);
    this.allocator = new ExtentAllocator(layout.extentCount, inUse);
    this.blocks = new BlockAllocator(this.allocator, blocksPerExtent, mappedBlocks(this.layers));
    this.#writer = new MetadataWriter(device.io, device.fd, layout, this, {
      nextSeq: recovered.nextSeq,
      tailBytes: recovered.journalTailBytes,
      activeSlot: recovered.checkpoint?.slot ?? 1,
    });
    debug("opened %s: %d volumes, %d batches replayed", device.path, this.volumes.size, recovered.batches.length);
  }

  /** The pool's fatal failure (a failed fsync), if any. */
  get failure(): KeelsonError | null {
    return this.#writer.failure;
  }

  /** Records a catalog change for the next commit. */
  record(change: CatalogChange): void {
    this.#changes.push(change);
  }

  /** Makes every change and completed write so far durable (group commit). */
  flush(): Promise<void> {
    if (this.closed) return Promise.reject(new KeelsonError({ code: "UNAVAILABLE", message: "pool is closed" }));
    return this.#writer.commit();
  }

  #commitTimer: NodeJS.Timeout | null = null;

  /**
   * Commits in the background within COMMIT_SOON_MS: for a change that must
   * reach the disk soon but need not wait for it (a replica's activity log,
   * which a full commit would make wait for every dirty page of the pool).
   */
  commitSoon(): void {
    if (this.#commitTimer || this.closed) return;
    this.#commitTimer = setTimeout(() => {
      this.#commitTimer = null;
      if (!this.closed) this.flush().catch(() => undefined);
    }, COMMIT_SOON_MS);
    this.#commitTimer.unref();
  }

  /** A commit started because free extents ran low, or null. */
  #reclaiming: Promise<void> | null = null;

  /**
   * Commits in the background once free extents run low while freed ones wait
   * in quarantine: a client that trims and writes but never flushes would
   * otherwise fill the pool with extents freed long ago, and every write
   * would then wait on a commit of its own. Cheap when there is nothing to do.
   */
  reclaimIfLow(): void {
    const quarantined = this.allocator.quarantinedCount + this.blocks.quarantinedCount;
    const low = this.blocks.allocatableBlocks <= this.#lowWaterExtents() * this.blocks.blocksPerExtent;
    if (this.#reclaiming || quarantined === 0 || !low) return;
    this.#reclaiming = this.flush()
      .catch(() => undefined)
      .finally(() => {
        this.#reclaiming = null;
      });
  }

  /** Free extents below which quarantined ones are reclaimed: a sixteenth of the pool, at least 4. */
  #lowWaterExtents(): number {
    return Math.max(4, Math.floor(this.layout.extentCount / 16));
  }

  /** Writes a final checkpoint unless the pool has failed (close). */
  async checkpoint(): Promise<void> {
    if (!this.#writer.failure) await this.#writer.checkpoint();
  }

  /** The volume named `name`; VOLUME_NOT_FOUND when there is none. */
  getVolume(name: string): Volume {
    const volume = this.volumes.get(name);
    if (!volume) throw new KeelsonError({ code: "VOLUME_NOT_FOUND", message: `volume ${JSON.stringify(name)} does not exist` });
    return volume;
  }

  /** One snapshot; SNAPSHOT_NOT_FOUND when there is none. */
  getSnapshot(volumeName: string, name: string): Snapshot {
    const snap = this.snapshots.get(snapshotExportName(volumeName, name));
    if (snap) return snap;
    throw new KeelsonError({
      code: "SNAPSHOT_NOT_FOUND",
      message: `snapshot ${JSON.stringify(name)} of volume ${JSON.stringify(volumeName)} does not exist`,
    });
  }

  // ---- the layer tree ----

  /** The chain read through from `layerId`: that layer first, then its ancestors. */
  chainOf(layerId: number): Layer[] {
    const chain: Layer[] = [];
    for (let id: number | null = layerId; id !== null; ) {
      const layer = this.layers.get(id);
      if (!layer) throw new KeelsonError({ code: "METADATA_CORRUPT", message: `layer chain misses layer ${id}` });
      chain.push(layer);
      if (chain.length > this.layers.size) throw new KeelsonError({ code: "METADATA_CORRUPT", message: "layer chain loops" });
      id = layer.parentId;
    }
    return chain;
  }

  /** Recomputes every volume's and snapshot's chain after the layer tree changed. */
  relink(): void {
    for (const v of this.volumes.values()) v.chain = this.chainOf(v.record.headLayerId);
    for (const s of this.snapshots.values()) s.chain = this.chainOf(s.record.layerId);
  }

  /** Adds an empty layer on top of `parent` (a new head, or the base of a clone). */
  newLayer(parent: Layer | null, volumeUid: string): Layer {
    const layer = new Layer({ id: this.#nextLayerId++, parentId: parent ? parent.id : null, volumeUid });
    if (parent) parent.children++;
    this.layers.set(layer.id, layer);
    this.record({ op: "putLayer", layer: layer.record });
    return layer;
  }

  /** Drops a layer nothing reads through; returns its parent (which lost a child). */
  unlinkLeaf(layer: Layer): Layer | null {
    const parent = layer.parentId === null ? null : (this.layers.get(layer.parentId) ?? null);
    if (parent) parent.children--;
    this.dropLayer(layer);
    return parent;
  }

  /** Forgets a layer and releases its extents; the deleteLayer record covers all of its entries. */
  dropLayer(layer: Layer): void {
    for (const entry of layer.extents.values()) {
      if (entry.phys >= 0) this.releaseExtent(entry.phys);
      if (entry.blocks) this.releaseBlocks(entry.blocks);
      this.#dirty.delete(entry);
      this.entryCount--;
    }
    layer.extents.clear();
    layer.allocatedExtents = 0;
    layer.allocatedBlocks = 0;
    this.layers.delete(layer.id);
    this.record({ op: "deleteLayer", id: layer.id });
  }

  // ---- used by volume I/O ----

  /** Marks an entry changed so the next commit records it. */
  markDirty(entry: EntryRecord): void {
    this.#dirty.add(entry);
  }

  /** Frees a physical extent once the next commit is durable. */
  releaseExtent(phys: number): void {
    this.allocator.release(phys);
    this.releasedExtents++;
  }

  /** Frees one physical block once the next commit is durable. */
  releaseBlock(block: number): void {
    this.blocks.release(block);
    this.releasedBlocks++;
  }

  /** Frees every physical block of a block map once the next commit is durable. */
  releaseBlocks(blocks: Int32Array): void {
    for (let i = 0; i < blocks.length; i++) {
      const block = blocks[i] as number;
      if (block < 0) continue;
      this.releaseBlock(block);
    }
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
    const quarantine = { extents: this.allocator.takeQuarantine(), blocks: this.blocks.takeQuarantine() };
    const pending = { changes: this.#changes, entries: [...this.#dirty], quarantine };
    this.#changes = [];
    this.#dirty = new Set();
    return pending;
  }

  restorePending(pending: PendingMetadata): void {
    this.#changes = [...pending.changes, ...this.#changes];
    const dirty = new Set<EntryRecord>(pending.entries);
    for (const e of this.#dirty) dirty.add(e);
    this.#dirty = dirty;
    this.allocator.requarantine(pending.quarantine.extents);
    this.blocks.requarantine(pending.quarantine.blocks);
  }

  snapshot(): { catalog: CatalogSnapshot; entries: EntryRecord[] } {
    const catalog: CatalogSnapshot = {
      nextLayerId: this.#nextLayerId,
      volumes: [...this.volumes.values()].map((v): VolumeRecord => v.record),
      layers: [...this.layers.values()].map((l): LayerRecord => l.record),
      snapshots: [...this.snapshots.values()].map((s): SnapshotRecord => s.record),
      ...(this.disk ? { disk: this.disk } : {}),
    };
    const entries: EntryRecord[] = [];
    for (const layer of this.layers.values()) for (const e of layer.extents.values()) entries.push(e);
    return { catalog, entries };
  }

  reclaim({ extents, blocks }: Quarantine): void {
    if (extents.length === 0 && blocks.length === 0) return;
    this.reads.afterCurrentReads(() => {
      this.allocator.reclaim(extents);
      this.blocks.reclaim(blocks);
    });
  }
}
