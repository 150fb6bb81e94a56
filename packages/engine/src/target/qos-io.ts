import { KeelsonError } from "@keelson/sdk";
import type { ExportCallback } from "../nbd/export.js";
import type { QosIo } from "../qos/qos-manager.js";
import type { ZeroOptions } from "../store/volume-io.js";
import type { BlockIo } from "./block-io.js";

// The I/Os of a target under QoS, as objects the throttle and the disk
// scheduler can hold; once let through they run on the next stage of the
// target. Only volumes with limits (or a pool with reservations) pay for
// them; everything else goes straight on.

/** The error of an I/O refused because its volume already has too many waiting. */
export function throttleQueueFull(volumeName: string): KeelsonError {
  return new KeelsonError({ code: "UNAVAILABLE", message: `volume ${volumeName} has too many I/Os waiting on its QoS limits` });
}

export class ReadIo implements QosIo {
  readonly write = false;
  readonly bytes: number;
  readonly #next: BlockIo;
  readonly #offset: number;
  readonly #buf: Buffer;
  readonly #bufOffset: number;
  readonly #cb: ExportCallback;

  constructor(next: BlockIo, offset: number, length: number, buf: Buffer, bufOffset: number, cb: ExportCallback) {
    this.#next = next;
    this.#offset = offset;
    this.bytes = length;
    this.#buf = buf;
    this.#bufOffset = bufOffset;
    this.#cb = cb;
  }

  execute(finish: () => void): void {
    this.#next.read(this.#offset, this.bytes, this.#buf, this.#bufOffset, (error) => {
      finish();
      this.#cb(error);
    });
  }
}

export class WriteIo implements QosIo {
  readonly write = true;
  readonly bytes: number;
  readonly #next: BlockIo;
  readonly #offset: number;
  readonly #data: Buffer;
  readonly #fua: boolean;
  readonly #cb: ExportCallback;

  constructor(next: BlockIo, offset: number, data: Buffer, fua: boolean, cb: ExportCallback) {
    this.#next = next;
    this.#offset = offset;
    this.#data = data;
    this.bytes = data.length;
    this.#fua = fua;
    this.#cb = cb;
  }

  execute(finish: () => void): void {
    this.#next.write(this.#offset, this.#data, this.#fua, (error) => {
      finish();
      this.#cb(error);
    });
  }
}

/** WRITE_ZEROES and TRIM: one write I/O that moves no data bytes. */
export class ZeroIo implements QosIo {
  readonly write = true;
  readonly bytes = 0;
  readonly #next: BlockIo;
  readonly #offset: number;
  readonly #length: number;
  readonly #options: ZeroOptions;
  readonly #cb: ExportCallback;

  constructor(next: BlockIo, offset: number, length: number, options: ZeroOptions, cb: ExportCallback) {
    this.#next = next;
    this.#offset = offset;
    this.#length = length;
    this.#options = options;
    this.#cb = cb;
  }

  execute(finish: () => void): void {
    this.#next.zero(this.#offset, this.#length, this.#options, (error) => {
      finish();
      this.#cb(error);
    });
  }
}
