import assert from "node:assert/strict";

// Bytes received from a socket, consumed from the front in exact amounts.
// Chunks are kept as they arrived; a read that lies inside one chunk is a view
// of it, a read that spans chunks is one copy. The owner bounds `length`.

export class ByteQueue {
  /** Received chunks, oldest first; the first one is partly consumed up to `#head`. */
  #chunks: Buffer[] = [];
  /** Bytes of `#chunks[0]` already consumed. */
  #head = 0;
  /** Unconsumed bytes in all chunks. */
  #length = 0;

  get length(): number {
    return this.#length;
  }

  push(chunk: Buffer): void {
    if (chunk.length === 0) return;
    this.#chunks.push(chunk);
    this.#length += chunk.length;
  }

  /** The first `lengthBytes` bytes, not consumed: a view when they lie in one chunk, else a copy. */
  peek(lengthBytes: number): Buffer {
    assert.ok(lengthBytes >= 0 && lengthBytes <= this.#length, `peek of ${lengthBytes} bytes with ${this.#length} queued`);
    const first = this.#chunks[0];
    if (first === undefined) return Buffer.alloc(0);
    if (first.length - this.#head >= lengthBytes) return first.subarray(this.#head, this.#head + lengthBytes);
    const out = Buffer.allocUnsafe(lengthBytes);
    let copied = 0;
    let at = this.#head;
    for (const chunk of this.#chunks) {
      copied += chunk.copy(out, copied, at, Math.min(chunk.length, at + lengthBytes - copied));
      at = 0;
      if (copied === lengthBytes) break;
    }
    return out;
  }

  /** Consumes `lengthBytes` bytes. */
  skip(lengthBytes: number): void {
    assert.ok(lengthBytes >= 0 && lengthBytes <= this.#length, `skip of ${lengthBytes} bytes with ${this.#length} queued`);
    this.#length -= lengthBytes;
    let left = lengthBytes;
    while (left > 0) {
      const first = this.#chunks[0] as Buffer;
      const inFirst = first.length - this.#head;
      if (left < inFirst) {
        this.#head += left;
        return;
      }
      left -= inFirst;
      this.#chunks.shift();
      this.#head = 0;
    }
  }

  /** Consumes and returns `lengthBytes` bytes (see {@link peek} for when it is a view). */
  take(lengthBytes: number): Buffer {
    const out = this.peek(lengthBytes);
    this.skip(lengthBytes);
    return out;
  }

  clear(): void {
    this.#chunks = [];
    this.#head = 0;
    this.#length = 0;
  }
}
