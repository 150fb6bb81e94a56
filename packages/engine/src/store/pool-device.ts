import fs from "node:fs";
import { KeelsonError } from "@keelson/sdk";
import type { DeviceIo } from "../device-io/device-io.js";
import { deviceIo } from "../device-io/select.js";

/** The block device or file a pool lives on, opened for direct use by the store. */
export interface PoolDevice {
  path: string;
  fd: number;
  sizeBytes: number;
  isBlockDevice: boolean;
  /** How the store's reads, writes and flushes reach the device (io_uring or the thread pool; shared by the process's pools). */
  io: DeviceIo;
  /** Releases the device (and the lock file of a file-backed pool). */
  close(): void;
}

/** Options of {@link openPoolDevice}. */
export interface OpenPoolDeviceOptions {
  path: string;
  /** Creates a sparse file of this size when `path` does not exist. */
  createSizeBytes?: number;
  /** The disk I/O engine; default: the process's ({@link deviceIo}). */
  io?: DeviceIo;
}

/**
 * Bytes the filesystem holding a file pool still has free for this process
 * (statfs f_bavail), or null for a block device, whose space is all its own.
 */
export function hostFreeBytes(device: Pick<PoolDevice, "path" | "isBlockDevice">): number | null {
  if (device.isBlockDevice) return null;
  const stat = fs.statfsSync(device.path);
  return stat.bavail * stat.bsize;
}

function blockDeviceSizeBytes(path: string, stat: fs.Stats): number {
  const rdev = stat.rdev;
  const major = Math.floor(rdev / 256) & 0xfff;
  const minor = (rdev & 0xff) | (Math.floor(rdev / 4096) & ~0xff);
  const sectors = Number(fs.readFileSync(`/sys/dev/block/${major}:${minor}/size`, "utf8").trim());
  if (!Number.isFinite(sectors) || sectors <= 0) {
    throw new KeelsonError({ code: "INVALID_ARGUMENT", message: `cannot read the size of block device ${path}` });
  }
  return sectors * 512;
}

function isAlive(pid: number): boolean {
  try {
    process.kill(pid, 0);
    return true;
  } catch (error) {
    return (error as NodeJS.ErrnoException).code === "EPERM";
  }
}

/**
 * The pid a lock names: the target of the symlink, or the contents of a lock
 * file an older engine wrote; 0 when it is gone or names nothing.
 */
function lockOwner(lockPath: string): number {
  try {
    return Number(fs.readlinkSync(lockPath));
  } catch (error) {
    const code = (error as NodeJS.ErrnoException).code;
    if (code === "ENOENT") return 0;
    if (code !== "EINVAL") throw error;
    return Number(fs.readFileSync(lockPath, "utf8"));
  }
}

/**
 * Takes `<path>.lock` for a file-backed pool so two daemons never share one.
 * A lock left by a dead process (kill -9) is taken over. The lock is a symlink
 * whose target is the owner's pid: creating it is atomic and needs no data
 * block (the target fits in the inode), so a pool on a full host filesystem
 * still opens, where writing a pid into a file failed with ENOSPC.
 */
function lockFile(path: string): () => void {
  const lockPath = `${path}.lock`;
  for (let attempt = 0; attempt < 2; attempt++) {
    try {
      fs.symlinkSync(String(process.pid), lockPath);
      return () => fs.rmSync(lockPath, { force: true });
    } catch (error) {
      if ((error as NodeJS.ErrnoException).code !== "EEXIST") throw error;
      const owner = lockOwner(lockPath);
      if (Number.isInteger(owner) && owner > 0 && owner !== process.pid && isAlive(owner)) {
        throw new KeelsonError({ code: "VOLUME_IN_USE", message: `pool ${path} is in use by process ${owner} (${lockPath})` });
      }
      fs.rmSync(lockPath, { force: true });
    }
  }
  throw new KeelsonError({ code: "INTERNAL", message: `cannot lock pool ${path}` });
}

/**
 * Opens a pool device. Block devices are opened O_EXCL so the kernel refuses
 * a second opener (a mounted filesystem or another daemon).
 */
export function openPoolDevice(options: OpenPoolDeviceOptions): PoolDevice {
  const { path } = options;
  if (!fs.existsSync(path)) {
    if (options.createSizeBytes === undefined) {
      throw new KeelsonError({ code: "INVALID_ARGUMENT", message: `pool ${path} does not exist (give a size to create it)` });
    }
    const fd = fs.openSync(path, "wx");
    fs.ftruncateSync(fd, options.createSizeBytes);
    fs.closeSync(fd);
  }
  const stat = fs.statSync(path);
  const io = options.io ?? deviceIo();
  if (stat.isBlockDevice()) {
    const fd = fs.openSync(path, fs.constants.O_RDWR | fs.constants.O_EXCL);
    return { path, fd, sizeBytes: blockDeviceSizeBytes(path, stat), isBlockDevice: true, io, close: () => fs.closeSync(fd) };
  }
  if (!stat.isFile()) {
    throw new KeelsonError({ code: "INVALID_ARGUMENT", message: `pool ${path} is neither a block device nor a regular file` });
  }
  const unlock = lockFile(path);
  try {
    const fd = fs.openSync(path, "r+");
    return {
      path,
      fd,
      sizeBytes: stat.size,
      isBlockDevice: false,
      io,
      close: () => {
        fs.closeSync(fd);
        unlock();
      },
    };
  } catch (error) {
    unlock();
    throw error;
  }
}
