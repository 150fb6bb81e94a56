import type { SnapshotRecord, VolumeRecord } from "./catalog.js";
import { IoCounters } from "./io-counters.js";
import type { Layer } from "./layer.js";
import { WriteGate } from "./write-gate.js";

/** Anything readable through a chain of layers: a volume or a snapshot. */
export interface ChainView {
  readonly name: string;
  readonly sizeBytes: number;
  /** The layers read for a block, newest first. */
  readonly chain: Layer[];
  /** Set once the object is deleted; I/O through stale handles fails. */
  readonly deleted: boolean;
}

/** Label of a pool volume that is a copy (replica) of the cluster volume it names; set where the cluster creates it. */
export const REPLICA_OF_LABEL = "keelson.io/replica-of";

/**
 * Whether a pool volume belongs to a cluster volume (a replica, or a copy a delete left behind) rather than
 * being an application's volume of this node: such a copy is reached through the replica protocol or its
 * cluster record, never under its name alone.
 */
export function isReplicaCopy(v: Volume): boolean {
  return (v.record.epoch ?? 0) > 0 || v.record.labels[REPLICA_OF_LABEL] !== undefined;
}

/** A volume at run time. */
export class Volume implements ChainView {
  record: VolumeRecord;
  /** The layers read for a block, writable head first. */
  chain: Layer[];
  readonly gate = new WriteGate();
  /** Requests its exports served since the daemon started. */
  readonly io = new IoCounters();
  /** Open export handles (NBD connections); delete refuses while any is open. */
  openHandles = 0;
  /** Set when the volume is deleted; I/O through stale handles fails. */
  deleted = false;

  constructor(record: VolumeRecord, chain: Layer[]) {
    this.record = record;
    this.chain = chain;
  }

  get name(): string {
    return this.record.name;
  }

  get sizeBytes(): number {
    return this.record.sizeBytes;
  }

  get head(): Layer {
    return this.chain[0] as Layer;
  }
}

/** A snapshot at run time: a read-only view of its sealed layer's chain. */
export class Snapshot implements ChainView {
  readonly record: SnapshotRecord;
  /** Its layer first, then that layer's ancestors. */
  chain: Layer[];
  /** Open read-only export handles; delete refuses while any is open. */
  openHandles = 0;
  deleted = false;
  /** Requests its exports served since the daemon started. */
  readonly io = new IoCounters();

  constructor(record: SnapshotRecord, chain: Layer[]) {
    this.record = record;
    this.chain = chain;
  }

  /** Export name: `VOLUME@SNAPSHOT`. */
  get name(): string {
    return snapshotExportName(this.record.volumeName, this.record.name);
  }

  get sizeBytes(): number {
    return this.record.sizeBytes;
  }

  get layer(): Layer {
    return this.chain[0] as Layer;
  }
}

/** The NBD export name of a snapshot. */
export function snapshotExportName(volumeName: string, snapshotName: string): string {
  return `${volumeName}@${snapshotName}`;
}
