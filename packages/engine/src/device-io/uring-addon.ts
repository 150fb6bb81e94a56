import fs from "node:fs";
import { createRequire } from "node:module";
import { fileURLToPath } from "node:url";
import { messageOf } from "../util/errors.js";

// Loads keelson's io_uring addon (native/uring, built at install by
// scripts/build-native.mjs). Its absence is no error: the engine then runs on
// the thread pool and says why.

/** An io_uring's handle; opaque to JavaScript. */
export type RingHandle = object & { readonly __ring: unique symbol };

/** The addon's functions (native/uring/uring.c). Results are 0 or a request count, or -errno. */
/** Prepares one read or write of `length` bytes at `buffer[offset]`, file `position`; 0, or a negative errno. */
type RingRw = (
  ring: RingHandle,
  fd: number,
  buffer: Buffer,
  offset: number,
  length: number,
  position: number,
  token: number,
  align: number,
) => number;

export interface UringAddon {
  open(capacity: number, onCompletions: (count: number) => void, results: Int32Array): RingHandle;
  /**
   * `align` (a power of two; 0: none) marks an O_DIRECT fd: a request not aligned to it goes through an
   * aligned copy (a read may start and end anywhere; a write must start and end on the grid, else -EINVAL).
   */
  read: RingRw;
  write: RingRw;
  fdatasync(ring: RingHandle, fd: number, token: number): number;
  submit(ring: RingHandle): number;
  /** Moves the completions already queued into the results array (no callback); how many (capacity: more may wait). */
  reapNow(ring: RingHandle): number;
  close(ring: RingHandle): number;
  /** Which of the ops keelson uses (READ, WRITE, FSYNC) this kernel's io_uring lacks; throws where the kernel cannot tell (before Linux 5.6). */
  missingOps(ring: RingHandle): string[];
  /**
   * Sets glibc malloc's trim threshold, top pad and mmap threshold (native/uring/allocator.c): the names
   * of those glibc refused (none when all took), or null where the C library is not glibc.
   */
  tuneAllocator(trimBytes: number, topPadBytes: number, mmapThresholdBytes: number): string[] | null;
}

/** The addon and null, or null and why io_uring cannot be used here. */
export type UringLoad = { addon: UringAddon; why: null } | { addon: null; why: string };

/** Where the build puts the addon (the same from src/ and from dist/). */
export const ADDON_PATH = fileURLToPath(new URL("../../native/uring/build/Release/keelson_uring.node", import.meta.url));

let file: UringLoad | undefined;
let loaded: UringLoad | undefined;

/** The addon as loaded, whether or not this kernel's io_uring works (its allocator tuning needs no ring). */
export function nativeAddon(): UringLoad {
  if (file) return file;
  if (!fs.existsSync(ADDON_PATH)) {
    file = {
      addon: null,
      why: `the io_uring addon is not built (${ADDON_PATH}; needs liburing-dev and a C compiler at install)`,
    };
    return file;
  }
  try {
    file = { addon: createRequire(import.meta.url)(ADDON_PATH) as UringAddon, why: null };
  } catch (error) {
    file = { addon: null, why: `io_uring is not available: ${messageOf(error)}` };
  }
  return file;
}

/** The addon and null, or null and why it cannot be used here (not built, or the kernel refuses io_uring or lacks an op). */
export function uringAddon(): UringLoad {
  if (loaded) return loaded;
  const native = nativeAddon();
  loaded = native.addon ? probeUring(native.addon) : native;
  return loaded;
}

/** `addon` and null where this kernel runs keelson's requests through io_uring, else null and why not. */
export function probeUring(addon: UringAddon): UringLoad {
  let missing: string[];
  try {
    // The kernel may refuse io_uring (kernel.io_uring_disabled, seccomp in a container): try one ring.
    const probe = addon.open(2, () => undefined, new Int32Array(4));
    try {
      missing = addon.missingOps(probe);
    } finally {
      addon.close(probe);
    }
  } catch (error) {
    return { addon: null, why: `io_uring is not available: ${messageOf(error)}` };
  }
  // A kernel that opens rings but lacks an op would fail every such request (EINVAL), flushes included, which fails the pool.
  if (missing.length > 0)
    return {
      addon: null,
      why: `io_uring is not usable: this kernel's io_uring lacks ${missing.join(", ")} (keelson needs READ, WRITE and FSYNC: Linux 5.6 or later)`,
    };
  return { addon, why: null };
}
