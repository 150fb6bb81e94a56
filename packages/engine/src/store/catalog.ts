import type { QosLimits } from "@keelson/sdk";
import type { ActivityLogRecord } from "./activity-record.js";

/**
 * A volume's QoS policy as the catalog stores it. The store keeps it as plain
 * data; `qos/` names it `QosPolicy`, validates it and enforces it.
 */
export interface QosPolicyRecord {
  limits: QosLimits;
  /** Guaranteed IOPS when the disk is saturated; admitted against the disk's capability. */
  reservationIops: number;
  /** Guaranteed bytes/s (admitted against the disk's bandwidth; scheduling is by IOPS). */
  reservationBytesPerSec: number;
  /** Share of the capacity beyond reservations, relative to other volumes' weights. */
  weight: number;
}

/** The weight of a volume whose record holds no QoS policy. */
export const DEFAULT_QOS_WEIGHT = 1;

/**
 * The policy a volume record without `qos` stands for: no limits, no
 * reservation, the default weight. The store needs it to compare policies
 * when a create is repeated; `qos/` calls it `defaultPolicy()`.
 */
export function absentQosPolicy(): QosPolicyRecord {
  return { limits: {}, reservationIops: 0, reservationBytesPerSec: 0, weight: DEFAULT_QOS_WEIGHT };
}

/**
 * What the pool's disk can do, measured by calibration or set by the
 * operator, as the catalog stores it; `qos/` admits reservations against it.
 */
export interface DiskCapabilityRecord {
  iops: number;
  bytesPerSec: number;
  source: "calibrated" | "operator";
  measuredAtMs: number;
  /** Fraction of the capability never promised to reservations (0.1 = 10%). */
  headroom: number;
}

/** Where a volume's data came from when it was created as a clone. */
export type VolumeSource =
  | { kind: "snapshot"; volumeName: string; snapshotName: string; snapshotUid: string }
  | { kind: "volume"; volumeName: string; volumeUid: string };

/** Persistent description of a volume (catalog record). */
export interface VolumeRecord {
  uid: string;
  name: string;
  sizeBytes: number;
  createdAtMs: number;
  labels: Record<string, string>;
  replicas: number;
  /** The writable layer at the top of the volume's chain; always a leaf of the layer tree. */
  headLayerId: number;
  /** Set for clones; absent for empty volumes. */
  source?: VolumeSource;
  /** Limits, reservation and weight; absent means none. */
  qos?: QosPolicyRecord;
  /** The QoS class the policy came from, if any. */
  qosClass?: string;
  /** Highest attachment epoch fenced on this replica; I/O under an older epoch is refused. Absent means 0. */
  epoch?: number;
  /** The write-intent log of the frontend that wrote here last (see activity-record.ts); absent when none saved one. */
  activity?: ActivityLogRecord;
}

/**
 * Persistent description of a snapshot: a name for one sealed layer. The
 * snapshot outlives its volume (the layer tree keeps its data), so it keeps
 * the volume's name for its export name `VOLUME@SNAPSHOT`.
 */
export interface SnapshotRecord {
  uid: string;
  name: string;
  volumeName: string;
  volumeUid: string;
  /** The sealed layer the snapshot names; its chain is the snapshot's content. */
  layerId: number;
  /** The volume's size when the snapshot was taken. */
  sizeBytes: number;
  createdAtMs: number;
  labels: Record<string, string>;
}

/** Persistent description of a layer: a set of extents, read through to its parent. */
export interface LayerRecord {
  id: number;
  /** The layer read when a block is absent here; null at the bottom of a chain. */
  parentId: number | null;
  /** The volume the layer was created for (for diagnostics; sharing is tracked by the layer tree). */
  volumeUid: string;
}

/** A catalog change, as written to the journal. */
export type CatalogChange =
  | { op: "putVolume"; volume: VolumeRecord }
  | { op: "deleteVolume"; uid: string }
  | { op: "putLayer"; layer: LayerRecord }
  | { op: "deleteLayer"; id: number }
  | { op: "putSnapshot"; snapshot: SnapshotRecord }
  | { op: "deleteSnapshot"; uid: string }
  | { op: "putDisk"; disk: DiskCapabilityRecord };

/** The whole catalog, as written to a checkpoint. */
export interface CatalogSnapshot {
  nextLayerId: number;
  volumes: VolumeRecord[];
  layers: LayerRecord[];
  /** Absent in checkpoints written before snapshots existed. */
  snapshots?: SnapshotRecord[];
  /** The disk's measured (or operator-set) capability; absent until calibrated. */
  disk?: DiskCapabilityRecord;
}

/** One extent of one layer, as written to checkpoints and the journal. */
export interface EntryRecord {
  layerId: number;
  /** Index of the extent within the volume (offset / extent size). */
  logical: number;
  /** Physical extent on the pool, or -1 when the entry holds no whole extent (zero markers, or a block map). */
  phys: number;
  /** Two bits per block; all zero means the entry is gone. */
  states: Uint8Array;
  /**
   * Sub-extent allocation: the physical block of each block of the extent (-1: none), when its
   * blocks are allocated one by one (phys is then -1). On disk, only blocks holding data are kept.
   */
  blocks?: Int32Array | null;
}
