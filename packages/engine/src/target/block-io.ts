import type { BlockStatusCallback, ExportCallback } from "../nbd/export.js";
import type { ZeroOptions } from "../store/volume-io.js";

// A target is a chain of stages ending in a backend: epoch fence -> QoS ->
// (encryption, later: it goes between QoS and the backend, so QoS counts the
// application's bytes and replicas only ever see ciphertext) -> backend. Each
// stage holds the next one and passes requests on with the caller's own
// arguments and callback: a stage with nothing to do for a request costs a
// call, never an allocation (the NBD request path runs through all of them).

/** One stage of a target's pipeline, or its backend. Every method calls back exactly once. */
export interface BlockIo {
  read(offset: number, length: number, buf: Buffer, bufOffset: number, cb: ExportCallback): void;
  write(offset: number, data: Buffer, fua: boolean, cb: ExportCallback): void;
  /** WRITE_ZEROES (trim false) or TRIM (trim true). */
  zero(offset: number, length: number, options: ZeroOptions, cb: ExportCallback): void;
  flush(cb: ExportCallback): void;
  /** Allocation (NBD_CMD_BLOCK_STATUS); a stage passes it on, a backend that cannot tell leaves it out. */
  blockStatus?(offset: number, length: number, maxRuns: number, cb: BlockStatusCallback): void;
}

/** Block status through `next`, or the whole range as data where it cannot tell (the protocol allows that for any block). */
export function blockStatusOf(next: BlockIo, offset: number, length: number, maxRuns: number, cb: BlockStatusCallback): void {
  if (next.blockStatus) return next.blockStatus(offset, length, maxRuns, cb);
  cb(null, [{ lengthBytes: length, status: "data" }]);
}
