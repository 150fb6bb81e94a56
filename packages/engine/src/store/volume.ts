import type { VolumeRecord } from "./catalog.js";
import type { Layer } from "./layer.js";
import { WriteGate } from "./write-gate.js";

/** A volume at run time. */
export class Volume {
  record: VolumeRecord;
  /** The layers read for a block, writable head first. */
  chain: Layer[];
  readonly gate = new WriteGate();
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

  /** Pool bytes this volume's layers occupy. */
  allocatedExtents(): number {
    let n = 0;
    for (const layer of this.chain) if (layer.record.volumeUid === this.record.uid) n += layer.allocatedExtents;
    return n;
  }
}
