import fs from "node:fs";
import { KeelsonError } from "@keelson/sdk";
import type { ExportCallback, ExportCatalog, NbdExport } from "../nbd/export.js";
import { NbdServer } from "../nbd/server.js";
import { type PowerCutReport, VolatileCache } from "./volatile-cache.js";

/** The name of the one export a volatile disk serves. */
export const VOLATILE_DISK_EXPORT = "disk";
/** Requests held while the disk hangs; past it a request fails at once (the test is broken, not the disk). */
export const MAX_HELD_REQUESTS = 4096;

/** How the disk answers: at once, after a random delay (a slow disk), or not until `resume` (a hung disk). */
export type DiskLatency = { kind: "none" } | { kind: "slow"; minMs: number; maxMs: number } | { kind: "hung" };

/** Options of {@link VolatileDisk.start}. */
export interface VolatileDiskOptions {
  /** The medium: an existing file whose size is the disk's. */
  backingFile: string;
  /** Unix socket the disk is served on (NBD, export {@link VOLATILE_DISK_EXPORT}). */
  socketPath: string;
  /** Drives early write-back and what a power cut keeps. */
  random: () => number;
  /** Bound of the volatile cache (see {@link VolatileCache}). */
  maxCachedBytes?: number;
  /** Chance per write that the disk also writes back a few random cached lines on its own. */
  earlyWriteBackChance?: number;
  latency?: DiskLatency;
}

/** Counts of what the disk was asked to do. */
export interface VolatileDiskStats {
  reads: number;
  writes: number;
  fuaWrites: number;
  zeroes: number;
  flushes: number;
  /** Longest time a request waited for the disk (slow or hung) before it ran, in ms. */
  maxWaitMs: number;
}

/** One request waiting for a slow or hung disk. */
interface Held {
  run: () => void;
  fail: () => void;
  heldAt: number;
}

const EARLY_WRITE_BACK_LINES = 4;

/**
 * A test disk served over NBD whose writes are volatile until FLUSH (or FUA),
 * as a disk with a write cache and no power-loss protection; `powerCut()`
 * stops it and keeps a random, torn subset of what was not flushed. Put it
 * under a daemon with nbdfuse and a loop device; the daemon's data path is
 * unchanged. Runs in the test's process, so a test controls it directly.
 */
export class VolatileDisk implements AsyncDisposable {
  readonly #server: NbdServer;
  readonly #cache: VolatileCache;
  readonly #fd: number;
  readonly #sizeBytes: number;
  readonly #random: () => number;
  readonly #earlyWriteBackChance: number;
  #latency: DiskLatency;
  /** Requests waiting for a hung disk, in arrival order. */
  #held: Held[] = [];
  /** Requests waiting out a slow disk's delay. */
  readonly #delayed = new Set<NodeJS.Timeout>();
  #state: "serving" | "off" = "serving";
  readonly stats: VolatileDiskStats = { reads: 0, writes: 0, fuaWrites: 0, zeroes: 0, flushes: 0, maxWaitMs: 0 };

  private constructor(options: VolatileDiskOptions, fd: number) {
    this.#fd = fd;
    this.#sizeBytes = fs.fstatSync(fd).size;
    this.#random = options.random;
    this.#earlyWriteBackChance = options.earlyWriteBackChance ?? 0.05;
    this.#latency = options.latency ?? { kind: "none" };
    this.#cache = new VolatileCache({
      fd,
      random: options.random,
      ...(options.maxCachedBytes === undefined ? {} : { maxCachedBytes: options.maxCachedBytes }),
    });
    this.#server = new NbdServer(this.#catalog());
  }

  /** Serves `backingFile` on `socketPath`. */
  static async start(options: VolatileDiskOptions): Promise<VolatileDisk> {
    const disk = new VolatileDisk(options, fs.openSync(options.backingFile, "r+"));
    await disk.#server.listen({ unixSocket: options.socketPath });
    return disk;
  }

  /** `nbd+unix:///disk?socket=...`, for nbdfuse and other libnbd clients. */
  get uri(): string {
    return `nbd+unix:///${VOLATILE_DISK_EXPORT}?socket=${this.#server.unixSocket}`;
  }

  /** Lines not flushed yet. */
  get cachedLines(): number {
    return this.#cache.cachedLines;
  }

  /** Changes how fast the disk answers; leaving "hung" runs the held requests. */
  setLatency(latency: DiskLatency): void {
    this.#latency = latency;
    if (latency.kind === "hung") return;
    const held = this.#held;
    this.#held = [];
    for (const h of held) this.#schedule(h);
  }

  /**
   * Power goes: the disk stops answering (every request in flight or later
   * fails, as the connection is cut), a random subset of the unflushed lines
   * reaches the backing file, some torn, the rest is lost. Idempotent.
   */
  async powerCut(): Promise<PowerCutReport> {
    const report = this.#state === "serving" ? this.#cache.powerCut() : null;
    this.#switchOff();
    await this.#server.close();
    return report ?? { cachedLines: 0, persistedLines: 0, tornLines: 0, droppedLines: 0 };
  }

  /** Flushes the cache and stops serving (a clean shutdown, or the end of a test). Idempotent. */
  async close(): Promise<void> {
    if (this.#state === "serving") this.#cache.flush();
    this.#switchOff();
    await this.#server.close();
  }

  async [Symbol.asyncDispose](): Promise<void> {
    await this.close();
  }

  /** Stops serving: held requests fail now, delayed ones when their delay ends. */
  #switchOff(): void {
    if (this.#state === "off") return;
    this.#state = "off";
    fs.closeSync(this.#fd);
    for (const h of this.#held.splice(0)) h.fail();
  }

  #catalog(): ExportCatalog {
    const describe = { sizeBytes: this.#sizeBytes, readOnly: false, description: "volatile test disk" };
    return {
      list: () => [{ name: VOLATILE_DISK_EXPORT, description: describe.description }],
      describe: (name) => (name === VOLATILE_DISK_EXPORT ? describe : null),
      open: (name) => (name === VOLATILE_DISK_EXPORT ? this.#export() : null),
    };
  }

  #export(): NbdExport {
    return {
      name: VOLATILE_DISK_EXPORT,
      description: "volatile test disk",
      sizeBytes: this.#sizeBytes,
      readOnly: false,
      read: (offset, length, buf, bufOffset, cb) =>
        this.#submit(cb, () => {
          this.stats.reads++;
          this.#cache.read(offset, length, buf, bufOffset);
        }),
      write: (offset, data, fua, cb) => {
        // The connection may reuse its receive buffer once this returns: the cache copies before then.
        const copy = Buffer.from(data);
        this.#submit(cb, () => this.#write(offset, copy, fua));
      },
      zero: (offset, length, options, cb) =>
        this.#submit(cb, () => {
          this.stats.zeroes++;
          const lines = this.#cache.write(offset, length);
          if (options.fua) this.#cache.writeBack(lines);
        }),
      flush: (cb) =>
        this.#submit(cb, () => {
          this.stats.flushes++;
          this.#cache.flush();
        }),
      close: () => undefined,
    };
  }

  #write(offset: number, data: Buffer, fua: boolean): void {
    this.stats.writes++;
    const lines = this.#cache.write(offset, data);
    if (fua) {
      this.stats.fuaWrites++;
      this.#cache.writeBack(lines);
    }
    if (this.#random() < this.#earlyWriteBackChance) this.#cache.writeBackRandom(EARLY_WRITE_BACK_LINES);
  }

  /** Runs `op` when the disk's latency allows and answers `cb`; a switched-off disk answers with an error. */
  #submit(cb: ExportCallback, op: () => void): void {
    const heldAt = Date.now();
    const held: Held = {
      heldAt,
      run: () => {
        if (this.#state === "off") return cb(poweredOff());
        this.stats.maxWaitMs = Math.max(this.stats.maxWaitMs, Date.now() - heldAt);
        op();
        cb(null);
      },
      fail: () => cb(poweredOff()),
    };
    if (this.#state === "off") return held.fail();
    if (this.#latency.kind === "hung") {
      if (this.#held.length >= MAX_HELD_REQUESTS) return held.fail();
      this.#held.push(held);
      return;
    }
    this.#schedule(held);
  }

  #schedule(held: Held): void {
    const latency = this.#latency;
    if (latency.kind !== "slow") return held.run();
    const delayMs = latency.minMs + this.#random() * (latency.maxMs - latency.minMs);
    const timer = setTimeout(() => {
      this.#delayed.delete(timer);
      held.run();
    }, delayMs);
    this.#delayed.add(timer);
  }
}

function poweredOff(): KeelsonError {
  return new KeelsonError({ code: "UNAVAILABLE", message: "the volatile test disk has no power" });
}
