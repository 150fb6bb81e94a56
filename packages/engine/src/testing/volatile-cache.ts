import assert from "node:assert";
import fs from "node:fs";

/**
 * The disk's cache line and physical sector: a write smaller than a line is
 * merged into it (read-modify-write, as a 4Kn disk does), and a power cut
 * tears a line at sector granularity.
 */
export const CACHE_LINE_BYTES = 4096;
export const SECTOR_BYTES = 512;
/** Volatile bytes held unless configured: past them the oldest lines are written back, as a disk cache does. */
export const DEFAULT_MAX_CACHED_BYTES = 64 * 1024 * 1024;

/** What a power cut did with the lines that were still volatile. */
export interface PowerCutReport {
  /** Lines in the cache when power went. */
  cachedLines: number;
  /** Lines that reached the medium whole. */
  persistedLines: number;
  /** Lines of which only some sectors reached the medium. */
  tornLines: number;
  /** Lines lost whole. */
  droppedLines: number;
}

/**
 * The volatile write cache of a simulated disk over a backing file (the
 * medium). Every write lands in the cache and is visible to reads at once;
 * only `flush` (or writing back to stay within the bound) puts it on the
 * medium. `powerCut` applies a random subset of the cached lines, some of
 * them torn, and drops the rest: what a disk without power-loss protection
 * may do to writes it acknowledged but was never asked to flush.
 *
 * The cache keeps the newest content per line (older versions of a line are
 * overwritten in it, as in a real cache), so a written-back line is always
 * the newest version and a power cut never brings back an older one.
 */
export class VolatileCache {
  readonly #fd: number;
  readonly #maxLines: number;
  readonly #random: () => number;
  /** Dirty lines by line index, oldest first (a rewrite moves a line to the end). */
  readonly #lines = new Map<number, Buffer>();
  /** Lines written back to the medium since the start (flushes, the bound, early write-back). */
  writtenBackLines = 0;

  constructor(options: { fd: number; maxCachedBytes?: number; random: () => number }) {
    this.#fd = options.fd;
    this.#maxLines = Math.max(1, Math.floor((options.maxCachedBytes ?? DEFAULT_MAX_CACHED_BYTES) / CACHE_LINE_BYTES));
    this.#random = options.random;
  }

  /** Lines held now. */
  get cachedLines(): number {
    return this.#lines.size;
  }

  /** Reads `length` bytes at `offset` into `buf` at `bufOffset`: the medium, overlaid by newer cached lines. */
  read(offset: number, length: number, buf: Buffer, bufOffset: number): void {
    readFully(this.#fd, buf.subarray(bufOffset, bufOffset + length), offset);
    if (this.#lines.size === 0) return;
    for (let line = Math.floor(offset / CACHE_LINE_BYTES); line * CACHE_LINE_BYTES < offset + length; line++) {
      const cached = this.#lines.get(line);
      if (!cached) continue;
      const from = Math.max(offset, line * CACHE_LINE_BYTES);
      const to = Math.min(offset + length, (line + 1) * CACHE_LINE_BYTES);
      cached.copy(buf, bufOffset + from - offset, from - line * CACHE_LINE_BYTES, to - line * CACHE_LINE_BYTES);
    }
  }

  /** Puts `data` at `offset` into the cache (zeros when `data` is a length); returns the lines touched. */
  write(offset: number, data: Buffer | number): number[] {
    const length = typeof data === "number" ? data : data.length;
    const touched: number[] = [];
    for (let line = Math.floor(offset / CACHE_LINE_BYTES); line * CACHE_LINE_BYTES < offset + length; line++) {
      const lineStart = line * CACHE_LINE_BYTES;
      const from = Math.max(offset, lineStart);
      const to = Math.min(offset + length, lineStart + CACHE_LINE_BYTES);
      let content = this.#lines.get(line);
      if (!content) {
        content = Buffer.alloc(CACHE_LINE_BYTES);
        // A partial line is merged with what the disk holds for the rest of it.
        if (to - from < CACHE_LINE_BYTES) readFully(this.#fd, content, lineStart);
      }
      if (typeof data === "number") content.fill(0, from - lineStart, to - lineStart);
      else data.copy(content, from - lineStart, from - offset, to - offset);
      // Delete first so the line moves to the end: the bound writes back the least recently written.
      this.#lines.delete(line);
      this.#lines.set(line, content);
      touched.push(line);
    }
    while (this.#lines.size > this.#maxLines) this.#writeBackOldest();
    return touched;
  }

  /** Writes back `lines` if they are still cached (a FUA write). */
  writeBack(lines: number[]): void {
    for (const line of lines) this.#writeBackLine(line);
  }

  /** Writes back up to `count` random cached lines, as a disk does in its own time. */
  writeBackRandom(count: number): void {
    for (let i = 0; i < count && this.#lines.size > 0; i++) {
      const keys = [...this.#lines.keys()];
      this.#writeBackLine(keys[Math.floor(this.#random() * keys.length)] as number);
    }
  }

  /**
   * Puts every cached line on the medium (FLUSH). The backing file is not
   * fdatasync'd: only the simulated disk loses power, never the host, so a
   * line written to the file is on the medium (and a sync per FLUSH would
   * block the test process for nothing).
   */
  flush(): void {
    for (const line of [...this.#lines.keys()].sort((a, b) => a - b)) this.#writeBackLine(line);
  }

  /**
   * Power goes: each cached line reaches the medium whole, torn (a random
   * subset of its sectors) or not at all, a third of the time each; the cache
   * is then empty.
   */
  powerCut(): PowerCutReport {
    const report: PowerCutReport = { cachedLines: this.#lines.size, persistedLines: 0, tornLines: 0, droppedLines: 0 };
    for (const [line, content] of this.#lines) {
      const fate = this.#random();
      if (fate < 1 / 3) {
        writeFully(this.#fd, content, line * CACHE_LINE_BYTES);
        report.persistedLines++;
      } else if (fate < 2 / 3) {
        for (let s = 0; s < CACHE_LINE_BYTES; s += SECTOR_BYTES) {
          if (this.#random() < 0.5) writeFully(this.#fd, content.subarray(s, s + SECTOR_BYTES), line * CACHE_LINE_BYTES + s);
        }
        report.tornLines++;
      } else report.droppedLines++;
    }
    this.#lines.clear();
    return report;
  }

  #writeBackOldest(): void {
    const first = this.#lines.keys().next();
    assert(!first.done, "the cache is not empty");
    this.#writeBackLine(first.value);
  }

  #writeBackLine(line: number): void {
    const content = this.#lines.get(line);
    if (!content) return;
    writeFully(this.#fd, content, line * CACHE_LINE_BYTES);
    this.#lines.delete(line);
    this.writtenBackLines++;
  }
}

/** Fills `buf` from `position` of `fd`; past the end of the file reads zeros. */
function readFully(fd: number, buf: Buffer, position: number): void {
  let done = 0;
  while (done < buf.length) {
    const n = fs.readSync(fd, buf, done, buf.length - done, position + done);
    if (n === 0) {
      buf.fill(0, done);
      return;
    }
    done += n;
  }
}

function writeFully(fd: number, buf: Buffer, position: number): void {
  let done = 0;
  while (done < buf.length) done += fs.writeSync(fd, buf, done, buf.length - done, position + done);
}
