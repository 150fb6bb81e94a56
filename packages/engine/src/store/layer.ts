import type { EntryRecord, LayerRecord } from "./catalog.js";

/** One extent of one layer: where its blocks live and which of them this layer holds. */
export class ExtentEntry implements EntryRecord {
  readonly layerId: number;
  readonly logical: number;
  /** Physical extent holding this layer's data blocks, or -1 when it holds only zero markers. */
  phys: number;
  /** Two bits per block (see BlockState). */
  states: Uint8Array;
  /** Physical block of each block when they are allocated one by one (see EntryRecord.blocks), else null. */
  blocks: Int32Array | null = null;
  /** Writes into `phys` that have not completed; the extent is never released while any is running. */
  pendingWrites = 0;
  /** Set when space was to be released while writes were pending; the last of them releases it. */
  releaseDeferred = false;

  constructor(layerId: number, logical: number, phys: number, states: Uint8Array, blocks: Int32Array | null = null) {
    this.layerId = layerId;
    this.logical = logical;
    this.phys = phys;
    this.states = states;
    this.blocks = blocks;
  }
}

/**
 * A layer at run time: its record, its extent index and how many layers read
 * through it. A layer lives while a volume head, a snapshot or a child needs it.
 */
export class Layer {
  /** Replaced (not mutated) when the layer is re-parented by a fold. */
  record: LayerRecord;
  /** Extent index: logical extent number to entry. */
  readonly extents = new Map<number, ExtentEntry>();
  /** Entries that own a physical extent. */
  allocatedExtents = 0;
  /** Physical blocks its block-mapped entries own (sub-extent allocation). */
  allocatedBlocks = 0;
  /** Layers whose parent this is. */
  children = 0;

  constructor(record: LayerRecord) {
    this.record = record;
  }

  get id(): number {
    return this.record.id;
  }

  get parentId(): number | null {
    return this.record.parentId;
  }
}
