import type { Snapshot } from "@keelson/sdk";
import { extentsToBitmap } from "@keelson/sdk/experimental";
import { describe, expect, it } from "vitest";
import { oldestFirst, unionRanges } from "./snapshot-copy.js";

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
