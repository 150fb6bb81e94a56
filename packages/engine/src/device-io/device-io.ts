import os from "node:os";

// The pool's disk I/O, behind one interface so the store does not care how a
// request reaches the kernel: io_uring (batched submissions, completions on
// the event loop) or libuv's thread pool (one hand-off per request).

/** Completion of a read or write: bytes done, or an errno-shaped error. */
export type RwCallback = (error: NodeJS.ErrnoException | null, bytes: number) => void;
/** Completion of a flush. */
export type SyncCallback = (error: NodeJS.ErrnoException | null) => void;

/** The engines: io_uring through keelson's addon, or node's fs (libuv's thread pool). */
export type IoEngine = "io_uring" | "threadpool";
/** What an operator may ask for: an engine, or the best one that works here. */
export type IoEngineChoice = IoEngine | "auto";

export function isIoEngineChoice(value: string): value is IoEngineChoice {
  return value === "io_uring" || value === "threadpool" || value === "auto";
}

/** Positional reads, writes and data flushes of one open device (fs callback shape, so the store takes either engine). */
export interface DeviceIo {
  readonly engine: IoEngine;
  /** Requests handed to the engine and not completed yet. */
  readonly inFlight: number;
  read(fd: number, buffer: Buffer, offset: number, length: number, position: number, cb: RwCallback): void;
  write(fd: number, buffer: Buffer, offset: number, length: number, position: number, cb: RwCallback): void;
  fdatasync(fd: number, cb: SyncCallback): void;
  /**
   * Opens `path` a second time, for reads and writes that bypass the page
   * cache (O_DIRECT), or says why it cannot: the kernel wants those aligned
   * in memory, position and length, and the engine must align what the store
   * hands it. Writes through the fd must start and end on a block.
   */
  openDirect(path: string): DirectOpen;
  /** Frees the engine; refused (EBUSY) while requests are in flight. */
  close(): void;
}

/** An fd open with O_DIRECT and how to close it (through the engine, which keeps a note of it), or why none could be had. */
export type DirectOpen = { fd: number; close: () => void; why: null } | { fd: null; why: string };

/**
 * Alignment the engines give O_DIRECT requests: memory, position and length
 * on 4 KiB, which covers every logical block size up to it.
 */
export const DIRECT_ALIGN_BYTES = 4096;

/**
 * errno number to name. Where node lists two names for one number (EAGAIN and
 * EWOULDBLOCK, ENOTSUP and EOPNOTSUPP) the first wins: it is the name node's
 * own fs errors carry, and the store compares codes across both engines.
 */
const ERRNO_NAMES = new Map<number, string>();
for (const [name, n] of Object.entries(os.constants.errno)) if (!ERRNO_NAMES.has(n)) ERRNO_NAMES.set(n, name);

/**
 * An error the engine reports for one request, shaped as node's fs reports
 * it (`code` "EIO", `errno` -5, `syscall`), so the store maps both engines'
 * failures the same way (ENOSPC is NO_SPACE, the rest INTERNAL).
 */
export class DeviceIoError extends Error implements NodeJS.ErrnoException {
  readonly code: string;
  readonly errno: number;
  readonly syscall: string;

  constructor(errno: number, syscall: string, detail = "") {
    const n = Math.abs(errno);
    const code = ERRNO_NAMES.get(n) ?? `E${n}`;
    super(`${code}: ${syscall} failed (errno ${n})${detail ? `: ${detail}` : ""}`);
    this.name = "DeviceIoError";
    this.code = code;
    this.errno = -n;
    this.syscall = syscall;
  }
}
