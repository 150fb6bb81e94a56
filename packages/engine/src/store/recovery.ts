import { KeelsonError } from "@keelson/sdk";
import { isEmpty } from "./block-states.js";
import type {
  CatalogChange,
  CatalogSnapshot,
  DiskCapabilityRecord,
  EntryRecord,
  LayerRecord,
  SnapshotRecord,
  VolumeRecord,
} from "./catalog.js";
import { ExtentEntry, Layer } from "./layer.js";
import type { PoolLayout } from "./layout.js";
import type { RecoveredMetadata } from "./metadata-log.js";

/** The in-memory state rebuilt from a checkpoint and the journal after it. */
export interface RecoveredState {
  nextLayerId: number;
  volumes: Map<string, VolumeRecord>;
  snapshots: SnapshotRecord[];
  disk: DiskCapabilityRecord | undefined;
  layers: Map<number, Layer>;
  entryCount: number;
}

function corrupt(message: string): KeelsonError {
  return new KeelsonError({ code: "METADATA_CORRUPT", message });
}

class StateBuilder {
  nextLayerId = 1;
  readonly volumes = new Map<string, VolumeRecord>();
  readonly snapshots = new Map<string, SnapshotRecord>();
  disk: DiskCapabilityRecord | undefined;
  readonly layerRecords = new Map<number, LayerRecord>();
  readonly entries = new Map<number, Map<number, EntryRecord>>();

  loadSnapshot(catalog: CatalogSnapshot, entries: readonly EntryRecord[]): void {
    this.nextLayerId = catalog.nextLayerId;
    for (const v of catalog.volumes) this.volumes.set(v.uid, v);
    for (const l of catalog.layers) this.putLayer(l);
    for (const s of catalog.snapshots ?? []) this.snapshots.set(s.uid, s);
    this.disk = catalog.disk;
    for (const e of entries) this.putEntry(e);
  }

  apply(change: CatalogChange): void {
    switch (change.op) {
      case "putVolume":
        this.volumes.set(change.volume.uid, change.volume);
        return;
      case "deleteVolume":
        this.volumes.delete(change.uid);
        return;
      case "putLayer":
        this.putLayer(change.layer);
        return;
      case "deleteLayer":
        this.layerRecords.delete(change.id);
        this.entries.delete(change.id);
        return;
      case "putSnapshot":
        this.snapshots.set(change.snapshot.uid, change.snapshot);
        return;
      case "deleteSnapshot":
        this.snapshots.delete(change.uid);
        return;
      case "putDisk":
        this.disk = change.disk;
        return;
    }
  }

  putLayer(layer: LayerRecord): void {
    this.layerRecords.set(layer.id, layer);
    if (!this.entries.has(layer.id)) this.entries.set(layer.id, new Map());
    this.nextLayerId = Math.max(this.nextLayerId, layer.id + 1);
  }

  /** Records are whole states: the last one for an extent wins; an empty one removes it. Unknown layers were deleted later in the same batch. */
  putEntry(entry: EntryRecord): void {
    const map = this.entries.get(entry.layerId);
    if (!map) return;
    if (entry.phys < 0 && isEmpty(entry.states)) map.delete(entry.logical);
    else map.set(entry.logical, entry);
  }
}

function checkVolumes(b: StateBuilder): Map<string, VolumeRecord> {
  const byName = new Map<string, VolumeRecord>();
  for (const v of b.volumes.values()) {
    if (!b.layerRecords.has(v.headLayerId)) throw corrupt(`volume ${v.name} has no head layer ${v.headLayerId}`);
    if (byName.has(v.name)) throw corrupt(`two volumes are named ${v.name}`);
    byName.set(v.name, v);
  }
  return byName;
}

/**
 * Checks a block-mapped entry's blocks and marks them in `claimed` (a bit per pool block: a Map
 * of every mapped block would be too large for a big pool): a block is mapped once and lies in
 * the pool. Returns how many the entry maps.
 */
function claimBlocks(e: EntryRecord, blocks: Int32Array, layout: PoolLayout, claimed: Uint8Array): number {
  if (!layout.subExtent) throw corrupt(`layer ${e.layerId} maps blocks one by one on a pool formatted without that`);
  let count = 0;
  for (let i = 0; i < blocks.length; i++) {
    const block = blocks[i] as number;
    if (block < 0) continue;
    if (block >= claimed.length * 8) throw corrupt(`layer ${e.layerId} maps block ${block} beyond the pool`);
    const bit = 1 << (block & 7);
    if (((claimed[block >> 3] as number) & bit) !== 0)
      throw corrupt(`block ${block} is mapped twice (again by layer ${e.layerId})`);
    claimed[block >> 3] = (claimed[block >> 3] as number) | bit;
    count++;
  }
  return count;
}

/** Whether any block of [from, to) is marked in `claimed`: a byte at a time where the range covers whole bytes. */
function anyClaimed(claimed: Uint8Array, from: number, to: number): boolean {
  const marked = (block: number): boolean => (((claimed[block >> 3] as number) >> (block & 7)) & 1) === 1;
  let b = from;
  for (; b < to && (b & 7) !== 0; b++) if (marked(b)) return true;
  for (; b + 8 <= to; b += 8) if (claimed[b >> 3] !== 0) return true;
  for (; b < to; b++) if (marked(b)) return true;
  return false;
}

function buildLayers(b: StateBuilder, layout: PoolLayout): { layers: Map<number, Layer>; entryCount: number } {
  const layers = new Map<number, Layer>();
  const physOwner = new Map<number, number>();
  const blocksPerExtent = layout.extentSizeBytes / layout.blockSizeBytes;
  const claimed = new Uint8Array(layout.subExtent ? Math.ceil((layout.extentCount * blocksPerExtent) / 8) : 0);
  let entryCount = 0;
  for (const record of b.layerRecords.values()) {
    const layer = new Layer(record);
    for (const e of b.entries.get(record.id)?.values() ?? []) {
      if (e.phys >= layout.extentCount) throw corrupt(`layer ${record.id} maps extent ${e.phys} beyond the pool`);
      if (e.phys >= 0) {
        const other = physOwner.get(e.phys);
        if (other !== undefined) throw corrupt(`extent ${e.phys} is mapped by layers ${other} and ${record.id}`);
        physOwner.set(e.phys, record.id);
        layer.allocatedExtents++;
      }
      if (e.blocks) layer.allocatedBlocks += claimBlocks(e, e.blocks, layout, claimed);
      layer.extents.set(e.logical, new ExtentEntry(record.id, e.logical, e.phys, e.states, e.blocks ?? null));
      entryCount++;
    }
    layers.set(record.id, layer);
  }
  // An extent mapped whole holds no block mapped one by one.
  for (const [extent, owner] of physOwner) {
    if (claimed.length > 0 && anyClaimed(claimed, extent * blocksPerExtent, (extent + 1) * blocksPerExtent)) {
      throw corrupt(`extent ${extent}, which layer ${owner} maps whole, has blocks mapped one by one`);
    }
  }
  for (const layer of layers.values()) {
    if (layer.parentId === null) continue;
    const parent = layers.get(layer.parentId);
    if (!parent) throw corrupt(`layer ${layer.id} has no parent layer ${layer.parentId}`);
    parent.children++;
  }
  return { layers, entryCount };
}

/** Rebuilds the store's state; METADATA_CORRUPT when the records contradict each other. */
export function rebuildState(recovered: RecoveredMetadata, layout: PoolLayout): RecoveredState {
  const b = new StateBuilder();
  if (recovered.checkpoint) b.loadSnapshot(recovered.checkpoint.catalog, recovered.checkpoint.entries);
  for (const batch of recovered.batches) {
    for (const change of batch.changes) b.apply(change);
    for (const entry of batch.entries) b.putEntry(entry);
  }
  const volumes = checkVolumes(b);
  const { layers, entryCount } = buildLayers(b, layout);
  const snapshots = [...b.snapshots.values()];
  for (const s of snapshots) {
    if (!layers.has(s.layerId)) throw corrupt(`snapshot ${s.volumeName}@${s.name} has no layer ${s.layerId}`);
  }
  for (const v of volumes.values()) {
    if ((layers.get(v.headLayerId) as Layer).children > 0) throw corrupt(`volume ${v.name}'s head layer has children`);
  }
  return { nextLayerId: b.nextLayerId, volumes, snapshots, disk: b.disk, layers, entryCount };
}
