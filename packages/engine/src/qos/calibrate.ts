import type { DeviceIo } from "../device-io/device-io.js";
import type { ScratchRegion } from "../store/scratch.js";

/** How long each calibration phase runs, and how many I/Os it keeps in flight. */
const PHASE_MS = 400;
const QUEUE_DEPTH = 16;
const SMALL_BYTES = 4096;
const LARGE_BYTES = 1024 * 1024;
/** Each worker syncs after this many of its writes: durability has a price, and a volume's writes pay it too. */
const SYNC_EVERY = 16;

/** What calibration measured, and how. */
export interface Calibration {
  /** 4 KiB random I/O a second: the harmonic mean of writes (with their syncs) and reads, the rate of a 50/50 mix. */
  iops: number;
  /** 1 MiB sequential writes (with their syncs), bytes a second. */
  bytesPerSec: number;
  /** Measured with O_DIRECT (the disk), or through the page cache because the device refuses it (`why`). */
  direct: boolean;
  why: string | null;
}

/** The device's calls as promises. */
function ioOf(io: DeviceIo, fd: number) {
  const rw =
    (write: boolean) =>
    (buf: Buffer, position: number): Promise<void> =>
      new Promise((resolve, reject) => {
        const done = (error: NodeJS.ErrnoException | null): void => (error ? reject(error) : resolve());
        if (write) io.write(fd, buf, 0, buf.length, position, done);
        else io.read(fd, buf, 0, buf.length, position, done);
      });
  const sync = (): Promise<void> =>
    new Promise((resolve, reject) => io.fdatasync(fd, (error) => (error ? reject(error) : resolve())));
  return { read: rw(false), write: rw(true), sync };
}

/**
 * Runs `op` at `QUEUE_DEPTH` for `PHASE_MS`; returns operations per second.
 * Each worker counts its own ops from 0. When one fails, the others stop
 * and every one has ended before the error is thrown: none may still write
 * once the caller closes the fd or gives the region back.
 */
async function phase(op: (worker: number, n: number) => Promise<unknown>): Promise<number> {
  const started = performance.now();
  let done = 0;
  let failed = false;
  const worker = async (w: number): Promise<void> => {
    try {
      for (let n = 0; !failed && performance.now() - started < PHASE_MS; n++) {
        await op(w, n);
        done++;
      }
    } catch (error) {
      failed = true;
      throw error;
    }
  };
  const ended = await Promise.allSettled(Array.from({ length: QUEUE_DEPTH }, (_, w) => worker(w)));
  const failure = ended.find((e): e is PromiseRejectedResult => e.status === "rejected");
  if (failure) throw failure.reason;
  return (done * 1000) / (performance.now() - started);
}

/**
 * Measures the disk under the pool, not the page cache above it: 4 KiB
 * random writes (a sync every {@link SYNC_EVERY} per worker) and random reads
 * of the blocks just written, with O_DIRECT through the pool's own I/O
 * engine (IOPS: their harmonic mean, the rate of a 50/50 mix), and 1 MiB
 * sequential writes with syncs (bytes/s). Where O_DIRECT is refused (tmpfs,
 * the thread-pool engine) it measures through the page cache with the same
 * syncs, and says so. About a second and a quarter.
 */
export async function calibrate(region: ScratchRegion): Promise<Calibration> {
  const opened = region.io.openDirect(region.path);
  const fd = opened.fd ?? region.fd;
  const dev = ioOf(region.io, fd);
  try {
    const blocks = Math.floor(region.bytes / SMALL_BYTES);
    const buffers = Array.from({ length: QUEUE_DEPTH }, () => Buffer.alloc(SMALL_BYTES, 0xa5));
    // A fixed multiplicative walk spreads the offsets without a random source; worker w's n-th op is op w + n * depth.
    const at = (i: number): number => region.offset + ((i * 2654435761) % blocks) * SMALL_BYTES;
    let written = 0;
    const writeIops = await phase(async (w, n) => {
      const i = w + n * QUEUE_DEPTH;
      await dev.write(buffers[w] as Buffer, at(i));
      written = Math.max(written, i + 1);
      if ((n + 1) % SYNC_EVERY === 0) await dev.sync();
    });
    // Reads of blocks never written would be answered from the filesystem's holes, not the disk.
    const readIops = await phase((w, n) => dev.read(buffers[w] as Buffer, at((w + n * QUEUE_DEPTH) % Math.max(1, written))));
    const large = Buffer.alloc(LARGE_BYTES, 0x5a);
    const largeCount = Math.max(1, Math.floor(region.bytes / LARGE_BYTES));
    const largePerSec = await phase(async (w, n) => {
      await dev.write(large, region.offset + ((w + n * QUEUE_DEPTH) % largeCount) * LARGE_BYTES);
      if ((n + 1) % SYNC_EVERY === 0) await dev.sync();
    });
    return {
      iops: Math.floor(2 / (1 / writeIops + 1 / readIops)),
      bytesPerSec: Math.floor(largePerSec * LARGE_BYTES),
      direct: opened.fd !== null,
      why: opened.why,
    };
  } finally {
    if (opened.fd !== null) opened.close();
  }
}
