import assert from "node:assert";

/**
 * Bytes received from a stream in chunks, consumed from the front. Joining
 * every new chunk onto what is buffered is quadratic while a large reply
 * arrives (a 32 MiB reply in 64 KiB chunks copies 8 GiB); here each byte is
 * copied at most once when taken, plus at most `n` bytes per `peek(n)`.
 */
export class ChunkQueue {
  /** Chunks not consumed yet, oldest first; the first may be a view past its consumed start. */
  #chunks: Buffer[] = [];
  /** Index of the first chunk in `#chunks` (shifting an array per chunk is itself O(n)). */
  #head = 0;
  #length = 0;

  /** Bytes buffered. */
  get length(): number {
    return this.#length;
  }

  push(chunk: Buffer): void {
    if (chunk.length === 0) return;
    this.#chunks.push(chunk);
    this.#length += chunk.length;
  }

  /** The first `n` bytes as one buffer, not consumed; copies only the `n` bytes, and only when they span chunks. */
  peek(n: number): Buffer {
    assert(n <= this.#length, `peek of ${n} bytes with ${this.#length} buffered`);
    const first = this.#chunks[this.#head] as Buffer;
    if (first.length >= n) return first.subarray(0, n);
    const joined = this.take(n, true);
    // Put the joined bytes back in front: the next peek finds them in one chunk.
    this.#compact();
    this.#chunks.unshift(joined);
    this.#length += n;
    return joined;
  }

  /** Removes and returns the first `n` bytes: a view of a chunk when they lie in one (unless `copy`), else a new buffer. */
  take(n: number, copy = false): Buffer {
    assert(n <= this.#length, `take of ${n} bytes with ${this.#length} buffered`);
    const first = this.#chunks[this.#head] as Buffer | undefined;
    if (n === 0 || first === undefined) return Buffer.alloc(0);
    if (first.length >= n && !copy) {
      this.#consume(n);
      return first.subarray(0, n);
    }
    return this.takeInto(n, Buffer.allocUnsafe(n));
  }

  /** Copies the first `n` bytes into the start of `out` (at least `n` long) and consumes them; returns that part of `out` (`out` itself when it is `n` long). */
  takeInto(n: number, out: Buffer): Buffer {
    assert(n <= this.#length && n <= out.length, `take of ${n} bytes into ${out.length} with ${this.#length} buffered`);
    let filled = 0;
    while (filled < n) {
      const c = this.#chunks[this.#head] as Buffer;
      const k = Math.min(c.length, n - filled);
      c.copy(out, filled, 0, k);
      filled += k;
      this.#consume(k);
    }
    return n === out.length ? out : out.subarray(0, n);
  }

  /** Drops the first `n` bytes. */
  skip(n: number): void {
    assert(n <= this.#length, `skip of ${n} bytes with ${this.#length} buffered`);
    let left = n;
    while (left > 0) {
      const k = Math.min((this.#chunks[this.#head] as Buffer).length, left);
      this.#consume(k);
      left -= k;
    }
  }

  /** Drops everything buffered. */
  clear(): void {
    this.#chunks = [];
    this.#head = 0;
    this.#length = 0;
  }

  /** Consumes `k` bytes of the first chunk (at most its length). */
  #consume(k: number): void {
    const c = this.#chunks[this.#head] as Buffer;
    this.#length -= k;
    if (k < c.length) this.#chunks[this.#head] = c.subarray(k);
    else {
      this.#chunks[this.#head] = EMPTY;
      this.#head++;
      if (this.#head === this.#chunks.length) this.clear();
      else if (this.#head >= 1024) this.#compact();
    }
  }

  #compact(): void {
    this.#chunks = this.#chunks.slice(this.#head);
    this.#head = 0;
  }
}

const EMPTY = Buffer.alloc(0);
