import fs from "node:fs";
import type { DeviceIo, RwCallback, SyncCallback } from "./device-io.js";

/** node's fs: each request a hand-off to libuv's thread pool and back. The fallback where io_uring is not available. */
export class ThreadPoolIo implements DeviceIo {
  readonly engine = "threadpool";
  #inFlight = 0;

  get inFlight(): number {
    return this.#inFlight;
  }

  read(fd: number, buffer: Buffer, offset: number, length: number, position: number, cb: RwCallback): void {
    this.#inFlight++;
    fs.read(fd, buffer, offset, length, position, (error, bytes) => {
      this.#inFlight--;
      cb(error, bytes);
    });
  }

  write(fd: number, buffer: Buffer, offset: number, length: number, position: number, cb: RwCallback): void {
    this.#inFlight++;
    fs.write(fd, buffer, offset, length, position, (error, bytes) => {
      this.#inFlight--;
      cb(error, bytes);
    });
  }

  fdatasync(fd: number, cb: SyncCallback): void {
    this.#inFlight++;
    fs.fdatasync(fd, (error) => {
      this.#inFlight--;
      cb(error);
    });
  }

  close(): void {}
}
