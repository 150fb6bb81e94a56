/** Persistent description of a volume (catalog record). */
export interface VolumeRecord {
  uid: string;
  name: string;
  sizeBytes: number;
  createdAtMs: number;
  labels: Record<string, string>;
  replicas: number;
  /** The writable layer at the top of the volume's chain. */
  headLayerId: number;
}

/** Persistent description of a layer: a set of extents, read through to its parent. */
export interface LayerRecord {
  id: number;
  /** The layer read when a block is absent here; null at the bottom of a chain. */
  parentId: number | null;
  /** The volume that owns the layer's space. */
  volumeUid: string;
}

/** A catalog change, as written to the journal. */
export type CatalogChange =
  | { op: "putVolume"; volume: VolumeRecord }
  | { op: "deleteVolume"; uid: string }
  | { op: "putLayer"; layer: LayerRecord }
  | { op: "deleteLayer"; id: number };

/** The whole catalog, as written to a checkpoint. */
export interface CatalogSnapshot {
  nextLayerId: number;
  volumes: VolumeRecord[];
  layers: LayerRecord[];
}

/** One extent of one layer, as written to checkpoints and the journal. */
export interface EntryRecord {
  layerId: number;
  /** Index of the extent within the volume (offset / extent size). */
  logical: number;
  /** Physical extent on the pool, or -1 when the entry only holds zero markers. */
  phys: number;
  /** Two bits per block; all zero means the entry is gone. */
  states: Uint8Array;
}
