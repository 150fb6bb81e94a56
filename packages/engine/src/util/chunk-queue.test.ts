import { describe, expect, it } from "vitest";
import { ChunkQueue } from "./chunk-queue.js";

describe("ChunkQueue", () => {
  it("peek, take and skip across chunk boundaries return the stream's bytes in order", () => {
    const stream = Buffer.from(Array.from({ length: 1000 }, (_, i) => i % 251));
    const q = new ChunkQueue();
    let at = 0;
    let seed = 7;
    const rand = (n: number): number => {
      seed = (seed * 1103515245 + 12345) % 2 ** 31;
      return seed % n;
    };
    for (let pushed = 0; pushed < stream.length; ) {
      const n = Math.min(1 + rand(40), stream.length - pushed);
      q.push(stream.subarray(pushed, pushed + n));
      pushed += n;
      while (q.length > 0) {
        const want = 1 + rand(30);
        if (want > q.length) break;
        const op = rand(4);
        if (op === 0) expect(q.peek(want).equals(stream.subarray(at, at + want))).toBe(true);
        else if (op === 3) {
          const out = Buffer.alloc(want + 3, 0xee);
          const got = q.takeInto(want, out);
          expect(got.buffer === out.buffer && got.byteOffset === out.byteOffset).toBe(true);
          expect(got.equals(stream.subarray(at, at + want))).toBe(true);
          expect(out.subarray(want).equals(Buffer.alloc(3, 0xee))).toBe(true); // nothing past what was taken
          at += want;
        } else if (op === 1) {
          expect(q.take(want).equals(stream.subarray(at, at + want))).toBe(true);
          at += want;
        } else {
          q.skip(want);
          at += want;
        }
        expect(q.length).toBe(pushed - at);
      }
    }
    expect(q.take(q.length).equals(stream.subarray(at))).toBe(true);
    expect(q.length).toBe(0);
  });

  it("a 32 MiB reply in 64 KiB chunks is not joined per chunk: a header peek is a view, the reply is taken in one copy", () => {
    const q = new ChunkQueue();
    const chunk = Buffer.alloc(64 * 1024, 9);
    for (let i = 0; i < 512; i++) {
      q.push(chunk);
      // What a parser does on every chunk: look at the header, find the reply incomplete. No bytes are copied for it.
      expect(q.peek(20).buffer).toBe(chunk.buffer);
    }
    const all = q.take(32 * 1024 * 1024);
    expect(all.length).toBe(32 * 1024 * 1024);
    expect(all[all.length - 1]).toBe(9);
    expect(q.length).toBe(0);
  });
});
