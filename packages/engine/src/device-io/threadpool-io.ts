import fs from "node:fs";
import type { DeviceIo, DirectOpen, RwCallback, SyncCallback } from "./device-io.js";

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

  openDirect(): DirectOpen {
    // node's fs reads into and writes from the caller's buffers as they are, and those are not aligned.
    return { fd: null, why: "the thread-pool engine cannot align buffers for O_DIRECT (the io_uring engine can)" };
  }

  close(): void {}
}
