import { KeelsonError } from "@keelson/sdk";
import type { BlockStatusCallback, ExportCallback } from "../nbd/export.js";
import type { QosManager, VolumeQos } from "../qos/qos-manager.js";
import type { ZeroOptions } from "../store/volume-io.js";
import { type BlockIo, blockStatusOf } from "./block-io.js";
import { ReadIo, throttleQueueFull, WriteIo, ZeroIo } from "./qos-io.js";

/** What an epoch fence guards: a volume whose record holds the highest epoch fenced on it (absent means 0). */
export interface FencedVolume {
  readonly name: string;
  readonly record: { readonly epoch?: number | undefined };
}

/** The error of I/O under an attachment epoch older than the volume's fence. */
export function staleEpoch(volume: FencedVolume, epoch: number): KeelsonError {
  return new KeelsonError({
    code: "EPOCH_STALE",
    message: `volume ${volume.name} is fenced at epoch ${volume.record.epoch ?? 0}; this connection holds epoch ${epoch}`,
  });
}

/**
 * Passes nothing on (EPOCH_STALE) once the volume is fenced at an epoch newer
 * than the one this handle was opened under: an older attachment's writes
 * must not land after a newer one took over (the replica side of fencing).
 */
export class EpochFence implements BlockIo {
  readonly #volume: FencedVolume;
  readonly #epoch: number;
  readonly #next: BlockIo;

  constructor(volume: FencedVolume, epoch: number, next: BlockIo) {
    this.#volume = volume;
    this.#epoch = epoch;
    this.#next = next;
  }

  /** False (and the callback gets EPOCH_STALE) when the volume was fenced past this handle's epoch. */
  #current(cb: ExportCallback): boolean {
    if (this.#epoch >= (this.#volume.record.epoch ?? 0)) return true;
    cb(staleEpoch(this.#volume, this.#epoch));
    return false;
  }

  read(offset: number, length: number, buf: Buffer, bufOffset: number, cb: ExportCallback): void {
    if (this.#current(cb)) this.#next.read(offset, length, buf, bufOffset, cb);
  }

  write(offset: number, data: Buffer, fua: boolean, cb: ExportCallback): void {
    if (this.#current(cb)) this.#next.write(offset, data, fua, cb);
  }

  zero(offset: number, length: number, options: ZeroOptions, cb: ExportCallback): void {
    if (this.#current(cb)) this.#next.zero(offset, length, options, cb);
  }

  flush(cb: ExportCallback): void {
    if (this.#current(cb)) this.#next.flush(cb);
  }

  /** Fenced like I/O: a superseded frontend learns it is stale from its first query too. */
  blockStatus(offset: number, length: number, maxRuns: number, cb: BlockStatusCallback): void {
    const stale = this.#epoch >= (this.#volume.record.epoch ?? 0) ? null : staleEpoch(this.#volume, this.#epoch);
    if (stale) return cb(stale, null);
    blockStatusOf(this.#next, offset, length, maxRuns, cb);
  }
}

/**
 * Sends reads, writes and zeroes through the QoS state kept under `key` in
 * the pool's QosManager (its limits' throttle, then the disk scheduler),
 * unless QoS has nothing to do for it: then straight on, with no I/O object.
 * Flushes are not throttled. The state is looked up until it exists and then
 * kept: a policy applied later updates that same object, so it takes effect
 * on connections already open.
 */
export class QosStage implements BlockIo {
  readonly #qos: QosManager;
  readonly #key: string;
  /** Named in the error of an I/O refused because too many already wait. */
  readonly #name: string;
  readonly #next: BlockIo;
  /** The QoS state under `key` once found (a policy change updates this same object). */
  #state: VolumeQos | undefined;

  constructor(qos: QosManager, key: string, name: string, next: BlockIo) {
    this.#qos = qos;
    this.#key = key;
    this.#name = name;
    this.#next = next;
    this.#state = qos.get(key);
  }

  /** The QoS state, or null when the I/O may go straight on (a map lookup only while there is no state yet). */
  #limited(): VolumeQos | null {
    let q = this.#state;
    if (q === undefined) {
      q = this.#qos.get(this.#key);
      if (q === undefined) return null;
      this.#state = q;
    }
    return this.#qos.passThrough(q) ? null : q;
  }

  read(offset: number, length: number, buf: Buffer, bufOffset: number, cb: ExportCallback): void {
    const q = this.#limited();
    if (q === null) return this.#next.read(offset, length, buf, bufOffset, cb);
    if (!this.#qos.submit(q, new ReadIo(this.#next, offset, length, buf, bufOffset, cb))) cb(throttleQueueFull(this.#name));
  }

  write(offset: number, data: Buffer, fua: boolean, cb: ExportCallback): void {
    const q = this.#limited();
    if (q === null) return this.#next.write(offset, data, fua, cb);
    if (!this.#qos.submit(q, new WriteIo(this.#next, offset, data, fua, cb))) cb(throttleQueueFull(this.#name));
  }

  zero(offset: number, length: number, options: ZeroOptions, cb: ExportCallback): void {
    const q = this.#limited();
    if (q === null) return this.#next.zero(offset, length, options, cb);
    if (!this.#qos.submit(q, new ZeroIo(this.#next, offset, length, options, cb))) cb(throttleQueueFull(this.#name));
  }

  flush(cb: ExportCallback): void {
    this.#next.flush(cb);
  }

  /** Not throttled: it is answered from metadata and costs the disk nothing. */
  blockStatus(offset: number, length: number, maxRuns: number, cb: BlockStatusCallback): void {
    blockStatusOf(this.#next, offset, length, maxRuns, cb);
  }
}
