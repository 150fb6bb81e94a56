/**
 * A region of the pool's device that holds nothing (free extents lent for a
 * while), where a caller may write, e.g. `qos/` calibrating the disk.
 */
export interface ScratchRegion {
  fd: number;
  offset: number;
  bytes: number;
}
