import fs from "node:fs";
import { KeelsonError } from "@keelson/sdk";
import createDebug from "debug";
import { messageOf } from "../util/errors.js";
import type { PoolLayout } from "./layout.js";

const debug = createDebug("keelson:store");

/** The metadata area is read and filled in chunks of this size, so the buffer stays bounded whatever the pool. */
const CHUNK_BYTES = 1024 * 1024;
/** Host filesystems allocate file space in pages of at least this size. */
const PAGE_BYTES = 4096;
const ZERO_PAGE = Buffer.alloc(PAGE_BYTES);

/** What {@link reserveMetadataArea} did. */
export interface MetadataReservation {
  /** Bytes of all-zero pages written back (holes filled, or zeros rewritten in place). */
  filledBytes: number;
}

/**
 * Makes the host filesystem allocate every page of a file pool's metadata
 * area (superblock, both checkpoint slots, the journal: everything before the
 * data extents). A pool file is created sparse, so these regions start as
 * holes, and a journal or checkpoint write into a hole on a full host
 * filesystem fails with ENOSPC: the pool could then make nothing durable, not
 * even overwrites of data already on disk, until space came back. Once every
 * page is allocated, metadata writes overwrite in place and never need space.
 *
 * Node has no fallocate, so pages that read as zeros are written with zeros:
 * a hole reads as zeros, and rewriting zeros over zeros changes no content, so
 * this is safe on a pool with metadata in it (it runs before the pool is used).
 * Copy-on-write filesystems (btrfs, zfs) still allocate on every overwrite;
 * there a full host filesystem can fail metadata writes (NO_SPACE) regardless.
 *
 * Throws NO_SPACE when the host filesystem has no room for the whole area;
 * pages filled before that stay allocated.
 */
export function reserveMetadataArea(fd: number, path: string, layout: PoolLayout): MetadataReservation {
  const chunk = Buffer.alloc(CHUNK_BYTES);
  let filledBytes = 0;
  for (let at = 0; at < layout.dataOffset; at += CHUNK_BYTES) {
    const length = Math.min(CHUNK_BYTES, layout.dataOffset - at);
    const got = fs.readSync(fd, chunk, 0, length, at);
    // A short read means the file ends early; openPoolCore refuses such a pool before this runs.
    for (let page = 0; page < got; ) {
      const runEnd = zeroRunEnd(chunk, page, got);
      if (runEnd === page) {
        page += PAGE_BYTES;
        continue;
      }
      writeZeros(fd, path, layout, chunk, page, runEnd - page, at + page);
      filledBytes += runEnd - page;
      page = runEnd;
    }
  }
  if (filledBytes > 0) fs.fdatasyncSync(fd);
  debug("metadata area of %s: %d bytes of zero pages allocated", path, filledBytes);
  return { filledBytes };
}

/** End of the run of all-zero pages of `buf` starting at `from` (`from` itself when that page holds data). */
function zeroRunEnd(buf: Buffer, from: number, end: number): number {
  let page = from;
  while (page < end) {
    const pageEnd = Math.min(end, page + PAGE_BYTES);
    if (!buf.subarray(page, pageEnd).equals(ZERO_PAGE.subarray(0, pageEnd - page))) return page;
    page = pageEnd;
  }
  return page;
}

/** Writes `length` zero bytes of `zeros` (a zeroed run of it) at `position`; NO_SPACE on ENOSPC or EDQUOT. */
function writeZeros(
  fd: number,
  path: string,
  layout: PoolLayout,
  zeros: Buffer,
  from: number,
  length: number,
  position: number,
): void {
  try {
    let done = 0;
    while (done < length) done += fs.writeSync(fd, zeros, from + done, length - done, position + done);
  } catch (error) {
    const code = (error as NodeJS.ErrnoException).code;
    if (code !== "ENOSPC" && code !== "EDQUOT") throw error;
    throw new KeelsonError({
      code: "NO_SPACE",
      message: `the host filesystem of pool ${path} has no room for the pool's ${layout.dataOffset} bytes of metadata (${messageOf(error)}); free space on it and open the pool again`,
      cause: error,
    });
  }
}
