import assert from "node:assert";
import { MAX_REQUEST_BYTES } from "./protocol.js";

/** Smallest size class: a 4 KiB read (and any smaller) gets a buffer of this much data room. */
const MIN_CLASS_BYTES = 4096;
/** Room before the data for the largest reply header (a structured chunk header and its offset). */
export const REPLY_HEADER_ROOM_BYTES = 32;
/** Bytes of idle buffers kept for reuse by default; a buffer given back beyond it is left to the garbage collector. */
export const DEFAULT_KEPT_BUFFER_BYTES = 64 * 1024 * 1024;

/**
 * The data buffers of READ replies and WRITE payloads, reused. A fresh buffer
 * per request (a megabyte for a 1 MiB read or write) is memory the garbage
 * collector must trace and free, and at a gigabyte a second it runs full
 * collections back to back; here a buffer goes back to a free list once its
 * request is done with it (a read's reply handed to the kernel, a write's
 * payload written), and the next request of its size class takes it. A write
 * uses the room after the header room, as a read does. Classes are powers of two of the data length
 * from 4 KiB; the bytes kept idle are bounded (what is in use is bounded by
 * the NBD byte budget, not here). One server's connections share it (one
 * thread: no locking).
 */
export class RequestBuffers {
  /** Idle buffers by class (index: log2 of the class's data bytes over the smallest). */
  readonly #free: Buffer[][];
  readonly #maxKeptBytes: number;
  #keptBytes = 0;

  constructor(maxKeptBytes = DEFAULT_KEPT_BUFFER_BYTES) {
    this.#maxKeptBytes = maxKeptBytes;
    this.#free = Array.from({ length: classOf(MAX_REQUEST_BYTES) + 1 }, () => []);
  }

  /** Bytes of the buffer `take(dataBytes)` gives: what a READ's reply holds of memory, and so what it is charged. */
  static bytesFor(dataBytes: number): number {
    return REPLY_HEADER_ROOM_BYTES + MIN_CLASS_BYTES * 2 ** classOf(dataBytes);
  }

  /** Bytes of idle buffers kept now. */
  get keptBytes(): number {
    return this.#keptBytes;
  }

  /**
   * A buffer with room for `REPLY_HEADER_ROOM_BYTES` and `dataBytes` (at least; give the whole buffer
   * back, not a slice of it). Its content is whatever the last reply left.
   */
  take(dataBytes: number): Buffer {
    const c = classOf(dataBytes);
    const idle = this.#free[c]?.pop();
    if (idle) {
      this.#keptBytes -= idle.length;
      return idle;
    }
    return Buffer.allocUnsafeSlow(RequestBuffers.bytesFor(dataBytes));
  }

  /** A buffer `take` gave, no longer used by anyone (its reply flushed, its payload written): kept for the next read of its class, within the bound. */
  give(buf: Buffer): void {
    const c = classOf(buf.length - REPLY_HEADER_ROOM_BYTES);
    const list = this.#free[c];
    assert.ok(
      list !== undefined && buf.length === REPLY_HEADER_ROOM_BYTES + MIN_CLASS_BYTES * 2 ** c,
      `a buffer of ${buf.length} bytes is not one RequestBuffers gave`,
    );
    if (this.#keptBytes + buf.length > this.#maxKeptBytes) return;
    this.#keptBytes += buf.length;
    list.push(buf);
  }
}

/** The size class of `dataBytes`: 0 for up to 4 KiB, then one per doubling. */
function classOf(dataBytes: number): number {
  if (dataBytes <= MIN_CLASS_BYTES) return 0;
  return Math.ceil(Math.log2(dataBytes / MIN_CLASS_BYTES));
}
