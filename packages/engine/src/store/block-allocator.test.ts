import { describe, expect, it } from "vitest";
import { seededRandom, testSeed } from "../testing/random.js";
import { BlockAllocator, slabExtentsOf } from "./block-allocator.js";
import { ExtentAllocator } from "./extent-allocator.js";

const BPE = 16;

function allocators(extents: number, blocksInUse: number[] = [], wholeInUse: number[] = []) {
  const slabs = slabExtentsOf(blocksInUse, BPE);
  const extentAllocator = new ExtentAllocator(extents, [...wholeInUse, ...slabs]);
  return { extents: extentAllocator, blocks: new BlockAllocator(extentAllocator, BPE, blocksInUse) };
}

/** Runs a commit: takes the quarantine and makes it free, as a durable commit does. */
function commit(blocks: BlockAllocator): void {
  blocks.reclaim(blocks.takeQuarantine());
}

describe("BlockAllocator", () => {
  it("hands out 4 KiB blocks from one slab, not an extent per request", () => {
    const { extents, blocks } = allocators(4);
    const runs = [blocks.allocate(1), blocks.allocate(1), blocks.allocate(1)];
    expect(runs.map((r) => r?.length)).toEqual([1, 1, 1]);
    expect(new Set(runs.map((r) => Math.floor((r?.first as number) / BPE))).size).toBe(1);
    expect(extents.freeCount).toBe(3);
    expect(blocks.freeBlocks).toBe(BPE - 3);
    expect(blocks.allocatableBlocks).toBe(BPE - 3 + 3 * BPE);
  });

  it("continues at the hint, so a volume's sequential writes stay sequential on disk", () => {
    const { blocks } = allocators(4);
    const a = blocks.allocate(2) as { first: number };
    blocks.allocate(1); // another volume's block right after
    const c = blocks.allocate(3, a.first + 2);
    // The hint is taken: the other volume's block.
    expect(c).not.toEqual({ first: a.first + 2, length: 3 });
    const d = blocks.allocate(2) as { first: number; length: number };
    const e = blocks.allocate(4, d.first + d.length);
    expect(e).toEqual({ first: d.first + d.length, length: 4 });
  });

  it("gives a long run whole when a slab has one, and a shorter one when none does", () => {
    const { blocks } = allocators(1);
    const all = blocks.allocate(BPE) as { first: number; length: number };
    expect(all.length).toBe(BPE);
    // Free every other block: no run longer than one.
    for (let i = 0; i < BPE; i += 2) blocks.release(all.first + i);
    commit(blocks);
    expect(blocks.allocate(4)).toEqual({ first: all.first, length: 1 });
  });

  it("quarantines freed blocks until a commit, and puts them back when the commit fails", () => {
    const { blocks } = allocators(1);
    const run = blocks.allocate(BPE) as { first: number };
    blocks.release(run.first + 3);
    expect(blocks.allocate(1)).toBeNull();
    const taken = blocks.takeQuarantine();
    expect(blocks.awaitingCommitCount).toBe(1);
    blocks.requarantine(taken);
    expect(blocks.quarantinedCount).toBe(1);
    expect(blocks.allocate(1)).toBeNull();
    commit(blocks);
    expect(blocks.allocate(1)).toEqual({ first: run.first + 3, length: 1 });
  });

  it("gives an emptied slab back as a whole extent", () => {
    const { extents, blocks } = allocators(2);
    const a = blocks.allocate(1) as { first: number };
    const b = blocks.allocate(1) as { first: number };
    expect(extents.freeCount).toBe(1);
    blocks.release(a.first);
    blocks.release(b.first);
    commit(blocks);
    expect(blocks.slabCount).toBe(0);
    expect(blocks.freeBlocks).toBe(0);
    expect(extents.freeCount).toBe(2);
  });

  it("carves a whole extent into blocks that are freed one by one", () => {
    const { extents, blocks } = allocators(2);
    const whole = extents.allocate();
    blocks.carve(whole);
    expect(blocks.inUse(whole * BPE + 5)).toBe(true);
    blocks.release(whole * BPE + 5);
    commit(blocks);
    expect(blocks.inUse(whole * BPE + 5)).toBe(false);
    expect(blocks.allocate(1, whole * BPE + 5)).toEqual({ first: whole * BPE + 5, length: 1 });
  });

  it("rebuilds its state from the blocks a pool maps at open", () => {
    const { extents, blocks } = allocators(3, [BPE + 1, BPE + 2, 2 * BPE], [0]);
    expect(extents.freeCount).toBe(0);
    expect(blocks.slabCount).toBe(2);
    expect(blocks.freeBlocks).toBe(2 * BPE - 3);
    expect(blocks.inUse(BPE + 1)).toBe(true);
    expect(blocks.inUse(BPE)).toBe(false);
    expect(() => allocators(3, [4, 4])).toThrow(/mapped twice/);
  });

  it("never hands out a block twice and accounts every block, under random allocations and frees", () => {
    const seed = testSeed();
    const rand = seededRandom(seed);
    const EXTENTS = 12;
    const { extents, blocks } = allocators(EXTENTS);
    const owned = new Set<number>();
    const quarantined: number[] = [];
    for (let step = 0; step < 4000; step++) {
      // Phases that fill the pool and drain it again, so slabs empty and extents come back.
      const filling = Math.floor(step / 400) % 2 === 0;
      const r = rand();
      if (r < (filling ? 0.6 : 0.05)) {
        const run = blocks.allocate(1 + Math.floor(rand() * BPE), rand() < 0.5 ? Math.floor(rand() * EXTENTS * BPE) : -1);
        if (run === null) {
          expect(blocks.allocatableBlocks, `seed ${seed}`).toBe(0);
          continue;
        }
        for (let b = run.first; b < run.first + run.length; b++) {
          expect(owned.has(b) || quarantined.includes(b), `seed ${seed}: block ${b} handed out twice`).toBe(false);
          owned.add(b);
        }
      } else if (r < 0.9 && owned.size > 0) {
        const b = [...owned][Math.floor(rand() * owned.size)] as number;
        owned.delete(b);
        quarantined.push(b);
        blocks.release(b);
      } else {
        commit(blocks);
        quarantined.length = 0;
      }
      expect(blocks.freeBlocks, `seed ${seed}`).toBeGreaterThanOrEqual(0);
      for (const b of owned) expect(blocks.inUse(b), `seed ${seed}: block ${b} held but free`).toBe(true);
      // Whole free extents plus free slab blocks plus what is held is everything.
      expect(extents.freeCount * BPE + blocks.freeBlocks + owned.size + quarantined.length, `seed ${seed}`).toBe(EXTENTS * BPE);
    }
  });
});
