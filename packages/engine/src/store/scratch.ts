import type { DeviceIo } from "../device-io/device-io.js";

/**
 * A region of the pool's device that holds nothing (free extents lent for a
 * while), where a caller may write, e.g. `qos/` calibrating the disk.
 */
export interface ScratchRegion {
  /** The pool's device path (a caller may open it a second time, e.g. with O_DIRECT through `io`). */
  path: string;
  /** The pool's own fd (buffered) and its disk I/O engine. */
  fd: number;
  io: DeviceIo;
  offset: number;
  bytes: number;
}
