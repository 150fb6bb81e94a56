import { KeelsonError } from "@keelson/sdk";
import type { DeviceIo } from "./device-io.js";

// Promise forms of DeviceIo's calls, for the store's paths that are not per-request (metadata commits, folds).

/** One read of `length` bytes into `buf[offset]`; resolves with the bytes read (may be short). */
export function readOnce(
  io: DeviceIo,
  fd: number,
  buf: Buffer,
  offset: number,
  length: number,
  position: number,
): Promise<number> {
  return new Promise((resolve, reject) =>
    io.read(fd, buf, offset, length, position, (error, n) => (error ? reject(error) : resolve(n))),
  );
}

/** Writes all of `buf` at `position`, again after short writes; INTERNAL "`what` made no progress" if one writes nothing. */
export async function writeAll(io: DeviceIo, fd: number, buf: Buffer, position: number, what: string): Promise<void> {
  let done = 0;
  while (done < buf.length) {
    const bytesWritten = await new Promise<number>((resolve, reject) =>
      io.write(fd, buf, done, buf.length - done, position + done, (error, n) => (error ? reject(error) : resolve(n))),
    );
    if (bytesWritten === 0) throw new KeelsonError({ code: "INTERNAL", message: `${what} made no progress` });
    done += bytesWritten;
  }
}

export function fdatasync(io: DeviceIo, fd: number): Promise<void> {
  return new Promise((resolve, reject) => io.fdatasync(fd, (error) => (error ? reject(error) : resolve())));
}
