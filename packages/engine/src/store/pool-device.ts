import fs from "node:fs";
import { KeelsonError } from "@keelson/sdk";
import type { DeviceIo } from "../device-io/device-io.js";
import { deviceIo } from "../device-io/select.js";
import { sysBlockDir } from "../util/block-device.js";

/** The block device or file a pool lives on, opened for direct use by the store. */
export interface PoolDevice {
  path: string;
  /** Through the page cache: the superblock, the metadata and anything not on the block grid. */
  fd: number;
  /**
   * Where volumes' data blocks are read and written: an O_DIRECT fd when the
   * pool was opened with `directIo`, else `fd`. Writes through it start and
   * end on a block.
   */
  dataFd: number;
  /** Data blocks bypass the page cache (O_DIRECT). */
  directIo: boolean;
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
  /**
   * Read and write data blocks with O_DIRECT (default: KEELSON_DIRECT_IO=1
   * asks for it, else off). UNAVAILABLE where the engine or the device cannot.
   */
  directIo?: boolean;
}

/** KEELSON_DIRECT_IO: "1" or "on" asks pools for O_DIRECT by default ("0", "off" or unset: not); INVALID_ARGUMENT for anything else. */
export function directIoFromEnv(env: NodeJS.ProcessEnv = process.env): boolean {
  const value = env.KEELSON_DIRECT_IO?.trim() ?? "";
  if (value === "1" || value === "on") return true;
  if (value === "" || value === "0" || value === "off") return false;
  throw new KeelsonError({ code: "INVALID_ARGUMENT", message: `KEELSON_DIRECT_IO=${value}: expected on, off, 1 or 0` });
}

/** The fd for data blocks: `fd` itself, or a second one opened O_DIRECT through `io`. */
function dataFdFor(path: string, fd: number, io: DeviceIo, direct: boolean): { dataFd: number; close: () => void } {
  if (!direct) return { dataFd: fd, close: () => undefined };
  const opened = io.openDirect(path);
  if (opened.fd === null) throw new KeelsonError({ code: "UNAVAILABLE", message: `direct I/O on pool ${path}: ${opened.why}` });
  return { dataFd: opened.fd, close: opened.close };
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
  const sectors = Number(fs.readFileSync(`${sysBlockDir(stat.rdev)}/size`, "utf8").trim());
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
  const direct = options.directIo ?? directIoFromEnv();
  if (stat.isBlockDevice()) {
    const sizeBytes = blockDeviceSizeBytes(path, stat);
    const fd = fs.openSync(path, fs.constants.O_RDWR | fs.constants.O_EXCL);
    try {
      // The O_DIRECT fd is opened without O_EXCL: the first fd holds the device for this process.
      const data = dataFdFor(path, fd, io, direct);
      const close = (): void => {
        data.close();
        fs.closeSync(fd);
      };
      return { path, fd, dataFd: data.dataFd, directIo: direct, sizeBytes, isBlockDevice: true, io, close };
    } catch (error) {
      fs.closeSync(fd);
      throw error;
    }
  }
  if (!stat.isFile()) {
    throw new KeelsonError({ code: "INVALID_ARGUMENT", message: `pool ${path} is neither a block device nor a regular file` });
  }
  const unlock = lockFile(path);
  try {
    const fd = fs.openSync(path, "r+");
    let data: { dataFd: number; close: () => void };
    try {
      data = dataFdFor(path, fd, io, direct);
    } catch (error) {
      fs.closeSync(fd);
      throw error;
    }
    return {
      path,
      fd,
      dataFd: data.dataFd,
      directIo: direct,
      sizeBytes: stat.size,
      isBlockDevice: false,
      io,
      close: () => {
        data.close();
        fs.closeSync(fd);
        unlock();
      },
    };
  } catch (error) {
    unlock();
    throw error;
  }
}
