// Raw reads and writes on whatever an attach hands back: an NBD export (the
// suite's own client, many requests in flight) or a block device on this host
// (O_DSYNC, so a completed write is an acknowledged one). A mounted directory
// has no raw access; the checks that need one say so.

import fs from "node:fs";
import { ConformanceError } from "../../errors.js";
import { openNbd } from "../../nbd/client.js";
import type { NbdReplyError } from "../../nbd/types.js";
import type { DataPath } from "../../target/target.js";
import { allSettledOrThrow } from "../common/concurrent.js";

/** How long one NBD request may take before the connection is given up. */
export const IO_TIMEOUT_MS = 30_000;
/** Largest single read the checks issue; bigger reads are split. */
export const MAX_READ_BYTES = 4 * 1024 * 1024;
/** Reads {@link mustRead} keeps in flight. */
const READS_IN_FLIGHT = 4;

/** Raw access to an attached volume or snapshot. No method rejects: failures come back as sentences. */
export interface VolumeIo {
  readonly sizeBytes: number;
  /** What it reads and writes ("nbd+unix:///vol?socket=...", "/dev/loop3"), for messages. */
  readonly where: string;
  /** Resolves with undefined once the write is acknowledged, or what failed. */
  write(offsetBytes: number, data: Buffer): Promise<string | undefined>;
  read(offsetBytes: number, lengthBytes: number): Promise<Buffer | string>;
  flush(): Promise<string | undefined>;
  close(): Promise<void>;
}

function nbdError(what: string, e: NbdReplyError, closeReason: string | undefined): string {
  return e === "closed" ? `${what}: the NBD connection closed (${closeReason ?? "no reason given"})` : `${what}: NBD error ${e}`;
}

async function openNbdIo(uri: string): Promise<VolumeIo> {
  const conn = await openNbd(uri, { timeoutMs: IO_TIMEOUT_MS });
  return {
    sizeBytes: conn.sizeBytes,
    where: uri,
    async write(offsetBytes, data) {
      const e = await conn.write(offsetBytes, data);
      return e === 0 ? undefined : nbdError(`write of ${data.length} bytes at ${offsetBytes}`, e, conn.closeReason);
    },
    async read(offsetBytes, lengthBytes) {
      const r = await conn.read(offsetBytes, lengthBytes);
      return Buffer.isBuffer(r) ? r : nbdError(`read of ${lengthBytes} bytes at ${offsetBytes}`, r.error, conn.closeReason);
    },
    async flush() {
      const e = await conn.flush();
      return e === 0 ? undefined : nbdError("flush", e, conn.closeReason);
    },
    async close() {
      await conn[Symbol.asyncDispose]();
    },
  };
}

/**
 * A block device's size from sysfs by its device number (fstat says 0 for devices; the node may sit
 * anywhere, as a CSI driver's published block volume does, not under /dev with its kernel name); a
 * plain file's from fstat.
 */
function deviceSizeBytes(fd: number): number {
  const stat = fs.fstatSync(fd, { bigint: true });
  if (stat.isFile()) return Number(stat.size);
  if (!stat.isBlockDevice()) {
    throw new ConformanceError({ code: "TARGET_FAILED", message: "the data path is neither a file nor a block device" });
  }
  const major = Number((stat.rdev >> 8n) & 0xfffn);
  const minor = Number((stat.rdev & 0xffn) | ((stat.rdev >> 12n) & 0xfff00n));
  return Number(fs.readFileSync(`/sys/dev/block/${major}:${minor}/size`, "utf8").trim()) * 512;
}

async function openBlockIo(devicePath: string, readOnly: boolean): Promise<VolumeIo> {
  const flags = readOnly ? fs.constants.O_RDONLY : fs.constants.O_RDWR | fs.constants.O_DSYNC;
  const handle = await fs.promises.open(devicePath, flags);
  let sizeBytes: number;
  try {
    sizeBytes = deviceSizeBytes(handle.fd);
  } catch (error) {
    // Never left open: an open device keeps its node busy, and the detach that follows could not unmount it.
    await handle.close().catch(() => undefined);
    throw error;
  }
  const failed = (what: string, error: unknown) => `${what} on ${devicePath}: ${(error as Error).message}`;
  return {
    sizeBytes,
    where: devicePath,
    async write(offsetBytes, data) {
      try {
        const { bytesWritten } = await handle.write(data, 0, data.length, offsetBytes);
        return bytesWritten === data.length
          ? undefined
          : `short write at ${offsetBytes}: ${bytesWritten} of ${data.length} bytes`;
      } catch (error) {
        return failed(`write at ${offsetBytes}`, error);
      }
    },
    async read(offsetBytes, lengthBytes) {
      try {
        const buf = Buffer.alloc(lengthBytes);
        const { bytesRead } = await handle.read(buf, 0, lengthBytes, offsetBytes);
        return bytesRead === lengthBytes ? buf : `short read at ${offsetBytes}: ${bytesRead} of ${lengthBytes} bytes`;
      } catch (error) {
        return failed(`read at ${offsetBytes}`, error);
      }
    },
    async flush() {
      try {
        await handle.datasync();
        return undefined;
      } catch (error) {
        return failed("fdatasync", error);
      }
    },
    async close() {
      await handle.close().catch(() => undefined);
    },
  };
}

/** Opens raw access to `dataPath`; NOT_SUPPORTED for a mounted filesystem. */
export async function openVolumeIo(dataPath: DataPath, options: { readOnly: boolean }): Promise<VolumeIo> {
  try {
    if (dataPath.kind === "nbd") return await openNbdIo(dataPath.uri);
    if (dataPath.kind === "block") return await openBlockIo(dataPath.devicePath, options.readOnly);
  } catch (error) {
    if (error instanceof ConformanceError) throw error;
    throw new ConformanceError({
      code: "TARGET_FAILED",
      message: `opening ${JSON.stringify(dataPath)}: ${(error as Error).message}`,
      cause: error,
    });
  }
  throw new ConformanceError({
    code: "NOT_SUPPORTED",
    message: `raw reads and writes need an attach of kind "nbd" or "block"; the target gave "${dataPath.kind}" (${dataPath.mountPath})`,
  });
}

/** Writes and throws TARGET_FAILED on failure: for setup writes, where a failure means the check cannot go on. */
export async function mustWrite(io: VolumeIo, offsetBytes: number, data: Buffer): Promise<void> {
  const e = await io.write(offsetBytes, data);
  if (e !== undefined) throw new ConformanceError({ code: "TARGET_FAILED", message: `${io.where}: ${e}` });
}

export async function mustFlush(io: VolumeIo): Promise<void> {
  const e = await io.flush();
  if (e !== undefined) throw new ConformanceError({ code: "TARGET_FAILED", message: `${io.where}: ${e}` });
}

/** Reads `lengthBytes` at `offsetBytes` in requests of at most {@link MAX_READ_BYTES}, a few in flight; throws on failure. */
export async function mustRead(io: VolumeIo, offsetBytes: number, lengthBytes: number): Promise<Buffer> {
  const out = Buffer.alloc(lengthBytes);
  const pieces: number[] = [];
  for (let at = 0; at < lengthBytes; at += MAX_READ_BYTES) pieces.push(at);
  const readPiece = async (at: number) => {
    const n = Math.min(MAX_READ_BYTES, lengthBytes - at);
    const r = await io.read(offsetBytes + at, n);
    if (typeof r === "string") throw new ConformanceError({ code: "TARGET_FAILED", message: `${io.where}: ${r}` });
    r.copy(out, at);
  };
  for (let i = 0; i < pieces.length; i += READS_IN_FLIGHT) {
    await allSettledOrThrow(pieces.slice(i, i + READS_IN_FLIGHT).map(readPiece));
  }
  return out;
}
