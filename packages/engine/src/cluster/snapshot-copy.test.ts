import type { Snapshot } from "@keelson/sdk";
import { extentsToBitmap } from "@keelson/sdk/experimental";
import { describe, expect, it } from "vitest";
import type { ReplicaIo } from "../replication/local-replica.js";
import { UNTHROTTLED } from "../replication/rebuild-throttle.js";
import { copyRanges, oldestFirst, unionRanges } from "./snapshot-copy.js";

function snap(name: string, parentSnapshot: string, createdAtMs: number): Snapshot {
  return { name, parentSnapshot, createdAt: new Date(createdAtMs) } as Snapshot;
}

describe("snapshot chain copy helpers", () => {
  it("order a pool's snapshots oldest first by their parent links, not by clock or name", () => {
    // The clock went back between s2 and s3: the parent links still put s3 last.
    const list = [snap("s3", "s2", 100), snap("a1", "", 500), snap("s2", "a1", 600)];
    expect(oldestFirst(list).map((s) => s.name)).toEqual(["a1", "s2", "s3"]);
  });

  it("merge the source's and the replica's extents (of different sizes) into ascending byte ranges", () => {
    const ranges = unionRanges([
      { extentBytes: 4, sizeBytes: 64, extents: [0, 1, 5] },
      { extentBytes: 8, sizeBytes: 64, extents: [1, 6] },
    ]);
    expect(ranges).toEqual([
      { offset: 0, length: 16 },
      { offset: 20, length: 4 },
      { offset: 48, length: 8 },
    ]);
    expect(unionRanges([{ extentBytes: 4, sizeBytes: 64, extents: [] }])).toEqual([]);
  });

  it("carry extents over the wire as a bitmap that names nothing past the volume", () => {
    const bitmap = extentsToBitmap([0, 3, 9, 70], 10);
    expect([...bitmap]).toEqual([0b0000_1001, 0b0000_0010]);
  });
});

describe("copyRanges", () => {
  const MIB = 1024 * 1024;
  /** Piece `i` of the source: data in even pieces, zeros (a hole) in odd ones. */
  const piece = (i: number) => Buffer.alloc(MIB, i % 2 === 0 ? (i % 250) + 1 : 0);

  it("reads into a few reused buffers, writes data and zeroes holes, and flushes the replica as it copies", async () => {
    const readInto = new Set<ArrayBufferLike>();
    const written = new Map<number, Buffer>();
    let unflushed = 0;
    let maxUnflushed = 0;
    let flushes = 0;
    const zeroed: number[] = [];
    const reader = {
      read: async (offset: number, length: number, into?: Buffer) => {
        const data = piece(offset / MIB).subarray(0, length);
        if (!into) return Buffer.from(data);
        readInto.add(into.buffer);
        data.copy(into);
        return into;
      },
    };
    const client = {
      write: async (offset: number, data: Buffer) => {
        written.set(offset, Buffer.from(data));
        unflushed += data.length;
        maxUnflushed = Math.max(maxUnflushed, unflushed);
      },
      zero: async (offset: number) => {
        zeroed.push(offset);
      },
      flush: async () => {
        flushes++;
        const covered = unflushed;
        for (let i = 0; i < 5; i++) await new Promise((r) => setImmediate(r));
        unflushed -= covered;
      },
    } as unknown as ReplicaIo;
    await copyRanges([{ offset: 0, length: 40 * MIB }], reader, { client, throttle: UNTHROTTLED }, 8 * MIB);
    for (let i = 0; i < 40; i += 2) expect(written.get(i * MIB)?.equals(piece(i)), `piece ${i}`).toBe(true);
    expect(written.size).toBe(20);
    expect(zeroed.length).toBe(20);
    expect(readInto.size).toBeGreaterThan(0);
    expect(readInto.size).toBeLessThanOrEqual(4);
    // 20 MiB of data at a flush per 8 MiB: flushes along the way, never more than two intervals dirty (plus pieces in flight).
    expect(flushes).toBeGreaterThanOrEqual(2);
    expect(maxUnflushed).toBeLessThanOrEqual(2 * 8 * MIB + 3 * MIB);
  });
});
