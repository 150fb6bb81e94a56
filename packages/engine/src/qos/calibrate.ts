import fs from "node:fs";
import { promisify } from "node:util";
import type { ScratchRegion } from "../store/scratch.js";

const pread = promisify(fs.read);
const pwrite = promisify(fs.write);

/** How long each calibration phase runs, and how many I/Os it keeps in flight. */
const PHASE_MS = 300;
const QUEUE_DEPTH = 16;
const SMALL_BYTES = 4096;
const LARGE_BYTES = 1024 * 1024;

/** Runs `op` at `QUEUE_DEPTH` for `PHASE_MS`; returns operations per second. */
async function phase(op: (i: number) => Promise<unknown>): Promise<number> {
  const started = performance.now();
  let done = 0;
  const worker = async (w: number): Promise<void> => {
    for (let i = w; performance.now() - started < PHASE_MS; i += QUEUE_DEPTH) {
      await op(i);
      done++;
    }
  };
  await Promise.all(Array.from({ length: QUEUE_DEPTH }, (_, w) => worker(w)));
  return (done * 1000) / (performance.now() - started);
}

/**
 * Measures what the disk serves through the engine's own I/O path: 4 KiB
 * random writes and reads (IOPS: their harmonic mean, the rate of a 50/50
 * mix) and 1 MiB sequential writes (bytes/s). About a second.
 */
export async function calibrate(region: ScratchRegion): Promise<{ iops: number; bytesPerSec: number }> {
  const blocks = Math.floor(region.bytes / SMALL_BYTES);
  const small = Buffer.alloc(SMALL_BYTES, 0xa5);
  const large = Buffer.alloc(LARGE_BYTES, 0x5a);
  // A fixed multiplicative walk spreads the offsets without a random source.
  const at = (i: number): number => region.offset + ((i * 2654435761) % blocks) * SMALL_BYTES;
  const writeIops = await phase((i) => pwrite(region.fd, small, 0, SMALL_BYTES, at(i)));
  const readIops = await phase((i) => pread(region.fd, small, 0, SMALL_BYTES, at(i)));
  const largeCount = Math.max(1, Math.floor(region.bytes / LARGE_BYTES));
  const largePerSec = await phase((i) =>
    pwrite(region.fd, large, 0, LARGE_BYTES, region.offset + (i % largeCount) * LARGE_BYTES),
  );
  return {
    iops: Math.floor(2 / (1 / writeIops + 1 / readIops)),
    bytesPerSec: Math.floor(largePerSec * LARGE_BYTES),
  };
}
