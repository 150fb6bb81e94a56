import { describe, expect, it } from "vitest";
import { REPLY_HEADER_ROOM_BYTES, RequestBuffers } from "./request-buffers.js";

describe("RequestBuffers", () => {
  it("gives a buffer with room for the header and the data, by power-of-two class from 4 KiB", () => {
    const pool = new RequestBuffers();
    expect(pool.take(0).length).toBe(REPLY_HEADER_ROOM_BYTES + 4096);
    expect(pool.take(4096).length).toBe(REPLY_HEADER_ROOM_BYTES + 4096);
    expect(pool.take(4097).length).toBe(REPLY_HEADER_ROOM_BYTES + 8192);
    expect(pool.take(1024 * 1024).length).toBe(REPLY_HEADER_ROOM_BYTES + 1024 * 1024);
    expect(pool.take(32 * 1024 * 1024).length).toBe(REPLY_HEADER_ROOM_BYTES + 32 * 1024 * 1024);
  });

  it("reuses a buffer given back for the next read of its class, not of another", () => {
    const pool = new RequestBuffers();
    const a = pool.take(4096);
    pool.give(a);
    expect(pool.keptBytes).toBe(a.length);
    expect(pool.take(8192)).not.toBe(a);
    expect(pool.take(100)).toBe(a);
    expect(pool.keptBytes).toBe(0);
    expect(pool.take(100)).not.toBe(a);
  });

  it("keeps no more idle bytes than its bound; beyond it a buffer is left to the collector", () => {
    const pool = new RequestBuffers(3 * (REPLY_HEADER_ROOM_BYTES + 4096));
    const taken = Array.from({ length: 5 }, () => pool.take(4096));
    for (const b of taken) pool.give(b);
    expect(pool.keptBytes).toBe(3 * (REPLY_HEADER_ROOM_BYTES + 4096));
    const again = new Set(Array.from({ length: 5 }, () => pool.take(4096)));
    expect(taken.filter((b) => again.has(b))).toHaveLength(3);
  });

  it("refuses a buffer it did not give (a slice, or another size): a programmer error", () => {
    const pool = new RequestBuffers();
    const b = pool.take(4096);
    expect(() => pool.give(b.subarray(0, 100))).toThrow(/not one RequestBuffers gave/);
    expect(() => pool.give(Buffer.alloc(5000))).toThrow(/not one RequestBuffers gave/);
  });
});
