import fs from "node:fs";
import path from "node:path";
import type { Cleanup } from "./cleanup.js";
import { run } from "./process.js";

const MIB = 1024 * 1024;
/** Filler writes go in chunks of this size first, then page by page until the filesystem refuses. */
const FILL_CHUNK_BYTES = MIB;
const PAGE_BYTES = 4096;
/** A filler never grows past this, so a filesystem that never says ENOSPC cannot eat the host's disk. */
const MAX_FILL_BYTES = 4096 * MIB;

/** A small host filesystem mounted by a test (root only); unmounted by the test's cleanup. */
export interface SmallFs {
  /** Where it is mounted. */
  readonly dir: string;
  /**
   * Writes a filler file of `name` until the filesystem answers ENOSPC, so it
   * is full to the last page; returns the bytes written.
   */
  fill(name: string): number;
  /** Deletes a filler file, giving its space back to the filesystem. */
  free(name: string): void;
  /** Bytes still available, as statfs reports them. */
  availableBytes(): number;
  /** Grows (or shrinks) the filesystem to `sizeBytes` in place, as an operator growing a volume would. */
  resize(sizeBytes: number): Promise<void>;
}

/**
 * Mounts a tmpfs of `sizeBytes` on a new directory under `parent`. tmpfs
 * allocates pages on write and answers ENOSPC at write time, like a full
 * ext4 or xfs, and needs no loop device.
 */
export async function mountSmallTmpfs(parent: string, sizeBytes: number, cleanup: Cleanup): Promise<SmallFs> {
  const dir = fs.mkdtempSync(path.join(parent, "smallfs-"));
  await run("mount", ["-t", "tmpfs", "-o", `size=${sizeBytes},mode=0700`, "tmpfs", dir]);
  cleanup.add(`umount ${dir}`, () => run("umount", ["-l", dir], { allowFail: true }));
  return {
    dir,
    fill: (name) => fillFile(path.join(dir, name)),
    free: (name) => fs.rmSync(path.join(dir, name), { force: true }),
    availableBytes: () => {
      const s = fs.statfsSync(dir);
      return s.bavail * s.bsize;
    },
    resize: async (size) => {
      await run("mount", ["-o", `remount,size=${size}`, dir]);
    },
  };
}

function fillFile(file: string): number {
  const fd = fs.openSync(file, "a");
  const chunk = Buffer.alloc(FILL_CHUNK_BYTES, 0xf1);
  let total = 0;
  try {
    for (const size of [FILL_CHUNK_BYTES, PAGE_BYTES]) {
      while (total < MAX_FILL_BYTES) {
        try {
          total += fs.writeSync(fd, chunk, 0, size);
        } catch (error) {
          if ((error as NodeJS.ErrnoException).code !== "ENOSPC") throw error;
          break;
        }
      }
    }
    fs.fsyncSync(fd);
  } finally {
    fs.closeSync(fd);
  }
  return total;
}
