import { EventEmitter } from "node:events";
import type { Socket } from "node:net";
import { KeelsonError } from "@keelson/sdk";

/**
 * The part of a net.Socket the NBD server uses, in memory: the harness emits
 * what the client sends as "data" events and reads back what the server
 * wrote, one entry per write call. No real socket, so a run takes
 * microseconds and replays exactly.
 */
export class FakeSocket extends EventEmitter {
  /** Buffers the server wrote, in order. */
  readonly written: Buffer[] = [];
  writtenBytes = 0;
  /** Writes after end() or destroy() (a real socket fails them). */
  lateWrites = 0;
  destroyed = false;
  ended = false;
  /** Whether the server asked the socket to stop reading. */
  isPaused = false;
  /** When set, every second write returns false (a peer that reads slowly) and "drain" follows a turn later. */
  readonly slowPeer: boolean;
  #writes = 0;

  constructor(options: { slowPeer?: boolean } = {}) {
    super();
    this.slowPeer = options.slowPeer ?? false;
  }

  /** This fake where a net.Socket is expected (it has every member the NBD code uses). */
  asSocket(): Socket {
    return this as unknown as Socket;
  }

  /** Corks taken and not yet released (writes are recorded as they come either way). */
  corked = 0;

  write(data: Buffer | Uint8Array | string, flushed?: (error?: Error | null) => void): boolean {
    if (this.ended || this.destroyed) {
      this.lateWrites++;
      if (flushed) process.nextTick(flushed, new KeelsonError({ code: "UNAVAILABLE", message: "write after end" }));
      return false;
    }
    // As a real socket calls it once the kernel has the bytes: later, never inside write().
    if (flushed) process.nextTick(flushed, null);
    const buf = Buffer.from(data);
    this.written.push(buf);
    this.writtenBytes += buf.length;
    this.#writes++;
    if (this.slowPeer && this.#writes % 2 === 0) {
      setImmediate(() => this.emit("drain"));
      return false;
    }
    return true;
  }

  end(): this {
    this.ended = true;
    return this;
  }

  destroy(): this {
    if (this.destroyed) return this;
    this.destroyed = true;
    process.nextTick(() => this.emit("close", false));
    return this;
  }

  pause(): this {
    this.isPaused = true;
    return this;
  }

  resume(): this {
    this.isPaused = false;
    return this;
  }

  cork(): void {
    this.corked++;
  }

  uncork(): void {
    if (this.corked > 0) this.corked--;
  }

  setNoDelay(): this {
    return this;
  }

  /** The client hangs up: "end" then "close", as a real socket reports it. */
  hangUp(): void {
    if (this.destroyed) return;
    this.emit("end");
    this.destroyed = true;
    this.emit("close", false);
  }
}

/** Splits `data` into chunks of `size` bytes (0: one chunk), as the network might deliver it. */
export function chunksOf(data: Buffer, size: number): Buffer[] {
  if (size <= 0 || size >= data.length) return data.length > 0 ? [data] : [];
  const out: Buffer[] = [];
  for (let at = 0; at < data.length; at += size) out.push(data.subarray(at, at + size));
  return out;
}

/** Chunk sizes an input's first byte picks from (0: all at once). */
export const CHUNK_SIZES = [0, 1, 3, 7, 16, 28, 64, 0] as const;
