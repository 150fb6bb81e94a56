import { type ChildProcess, spawn } from "node:child_process";
import fs from "node:fs";
import path from "node:path";
import type { PowerCutReport } from "../../src/testing/volatile-cache.js";
import { type DiskLatency, VolatileDisk } from "../../src/testing/volatile-disk.js";
import { run, waitExit } from "./process.js";

/** Options of {@link attachVolatileDisk}. */
export interface VolatileBlockDeviceOptions {
  /** The medium; created sparse with `sizeBytes` when missing, reused as it is otherwise (after a power cut). */
  backingFile: string;
  sizeBytes: number;
  /** Where the disk's socket and the FUSE mount point go. */
  dir: string;
  random: () => number;
  latency?: DiskLatency;
  maxCachedBytes?: number;
}

/** A volatile test disk as a real block device: the disk's NBD export under nbdfuse, a loop device on the FUSE file. */
export interface VolatileBlockDevice extends AsyncDisposable {
  readonly disk: VolatileDisk;
  /** `/dev/loopN`: give it to a daemon (or a local cluster node) as its pool. */
  readonly loopDevice: string;
  /** Cuts the disk's power (see {@link VolatileDisk.powerCut}); the block device fails every request after it. */
  powerCut(): Promise<PowerCutReport>;
  /** Detaches the loop device, unmounts nbdfuse and stops the disk (flushing it unless power was cut). Idempotent. */
  detach(): Promise<void>;
}

const FUSE_FILE_WAIT_MS = 5_000;
const UNMOUNT_TRIES = 20;

/**
 * Serves a volatile disk and puts a loop device on it through nbdfuse (no
 * kernel NBD module here). A flush of the loop device becomes an fsync of the
 * FUSE file, which nbdfuse sends as NBD FLUSH (the power-cut test checks that
 * the disk saw flushes).
 */
export async function attachVolatileDisk(options: VolatileBlockDeviceOptions): Promise<VolatileBlockDevice> {
  if (!fs.existsSync(options.backingFile)) {
    fs.writeFileSync(options.backingFile, Buffer.alloc(0));
    fs.truncateSync(options.backingFile, options.sizeBytes);
  }
  const disk = await VolatileDisk.start({
    backingFile: options.backingFile,
    socketPath: path.join(options.dir, `disk-${Date.now().toString(36)}.sock`),
    random: options.random,
    ...(options.latency ? { latency: options.latency } : {}),
    ...(options.maxCachedBytes === undefined ? {} : { maxCachedBytes: options.maxCachedBytes }),
  });
  const mnt = fs.mkdtempSync(path.join(options.dir, "volatile-fuse-"));
  let fuse: ChildProcess | null = null;
  const file = path.join(mnt, "nbd");
  let loopDevice = "";
  let detached = false;
  const detach = async (): Promise<void> => {
    if (detached) return;
    detached = true;
    if (loopDevice) await run("losetup", ["-d", loopDevice], { allowFail: true, timeoutMs: 30_000 });
    if (fuse) await unmount(mnt, fuse);
    await disk.close();
    fs.rmSync(mnt, { recursive: true, force: true });
  };
  try {
    fuse = spawn("nbdfuse", [mnt, disk.uri], { stdio: "ignore" });
    const deadline = Date.now() + FUSE_FILE_WAIT_MS;
    while (!fs.existsSync(file) && Date.now() < deadline) await new Promise((r) => setTimeout(r, 25));
    if (!fs.existsSync(file)) throw new Error(`nbdfuse did not expose ${disk.uri} in ${FUSE_FILE_WAIT_MS} ms`);
    // Direct I/O from the loop device to the FUSE file: through the FUSE file's page cache, writes are
    // throttled hard (FUSE's strict dirty limit) and a replica on this disk missed its deadlines.
    loopDevice = (await run("losetup", ["--find", "--show", "--direct-io=on", file])).stdout.trim();
  } catch (error) {
    await detach();
    throw error;
  }
  return {
    disk,
    loopDevice,
    powerCut: () => disk.powerCut(),
    detach,
    [Symbol.asyncDispose]: detach,
  };
}

/** Unmounts nbdfuse's mount point (lazily if it stays busy) and waits for nbdfuse to exit, killing it by its pid if it does not. */
async function unmount(mnt: string, fuse: ChildProcess): Promise<void> {
  for (let i = 0; i < UNMOUNT_TRIES; i++) {
    const r = await run("fusermount3", ["-u", mnt], { allowFail: true });
    if (r.code === 0 || fuse.exitCode !== null || fuse.signalCode !== null) break;
    await new Promise((resolve) => setTimeout(resolve, 100));
  }
  await run("fusermount3", ["-u", "-z", mnt], { allowFail: true });
  await waitExit(fuse, 5_000);
  if (fuse.exitCode === null && fuse.signalCode === null) fuse.kill("SIGKILL");
  await waitExit(fuse);
}
