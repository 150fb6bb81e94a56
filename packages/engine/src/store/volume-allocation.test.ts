import { describe, expect, it } from "vitest";
import { seededRandom, testSeed } from "../testing/random.js";
import { BlockState, newStates, setStates } from "./block-states.js";
import { ExtentEntry, Layer } from "./layer.js";
import { BLOCK_SIZE_BYTES } from "./layout.js";
import type { ChainView } from "./volume.js";
import { type AllocationRun, allocationMap } from "./volume-allocation.js";

// The allocation map against a reference model: random chains of layers with
// random block states, every block resolved on its own, the map's runs
// compared block by block over random (unaligned) ranges.

const EXTENT_BYTES = 64 * 1024;
const BLOCKS_PER_EXTENT = EXTENT_BYTES / BLOCK_SIZE_BYTES;

function randomChain(random: () => number, extents: number, depth: number): Layer[] {
  const chain: Layer[] = [];
  for (let d = 0; d < depth; d++) {
    const layer = new Layer({ id: d + 1, parentId: d + 2 <= depth ? d + 2 : null, volumeUid: "u" });
    for (let e = 0; e < extents; e++) {
      if (random() < 0.4) continue;
      const states = newStates(BLOCKS_PER_EXTENT / 4);
      // Some extents written through, the rest in random runs of states.
      const whole = random();
      if (whole < 0.15) setStates(states, 0, BLOCKS_PER_EXTENT, BlockState.DATA);
      else if (whole < 0.25) setStates(states, 0, BLOCKS_PER_EXTENT, BlockState.ZERO);
      else
        for (let b = 0; b < BLOCKS_PER_EXTENT; ) {
          const run = 1 + Math.floor(random() * 5);
          const pick = random();
          const state = pick < 0.4 ? BlockState.ABSENT : pick < 0.8 ? BlockState.DATA : BlockState.ZERO;
          setStates(states, b, Math.min(BLOCKS_PER_EXTENT, b + run), state);
          b += run;
        }
      layer.extents.set(e, new ExtentEntry(layer.id, e, random() < 0.9 ? e : -1, states));
    }
    chain.push(layer);
  }
  return chain;
}

/** The model: block `block` of the view holds data when the newest layer with a state for it says DATA. */
function modelHasData(chain: Layer[], block: number): boolean {
  const e = Math.floor(block / BLOCKS_PER_EXTENT);
  const b = block % BLOCKS_PER_EXTENT;
  for (const layer of chain) {
    const entry = layer.extents.get(e);
    if (!entry) continue;
    const s = ((entry.states[b >> 2] as number) >> ((b & 3) << 1)) & 3;
    if (s === BlockState.DATA) return true;
    if (s === BlockState.ZERO) return false;
  }
  return false;
}

function view(chain: Layer[], sizeBytes: number): ChainView {
  return { name: "v", sizeBytes, chain, deleted: false };
}

describe("allocationMap", () => {
  it("matches the model byte for byte over random chains and ranges; runs alternate, cover the range unless cut at maxRuns", () => {
    const seed = testSeed();
    console.log(`allocation map model: seed ${seed} (KEELSON_SEED=${seed} reproduces it)`);
    const random = seededRandom(seed);
    for (let round = 0; round < 200; round++) {
      const extents = 1 + Math.floor(random() * 6);
      const sizeBytes = extents * EXTENT_BYTES - Math.floor(random() * 3) * 512;
      const chain = randomChain(random, extents, 1 + Math.floor(random() * 3));
      const offset = Math.floor(random() * sizeBytes);
      const length = 1 + Math.floor(random() * (sizeBytes - offset));
      const maxRuns = random() < 0.3 ? 1 + Math.floor(random() * 4) : 10_000;
      const runs: AllocationRun[] = allocationMap(view(chain, sizeBytes), EXTENT_BYTES, offset, length, maxRuns);
      const where = `seed ${seed} round ${round}: [${offset}, +${length}) maxRuns ${maxRuns}`;
      expect(runs.length, where).toBeGreaterThanOrEqual(1);
      expect(runs.length, where).toBeLessThanOrEqual(maxRuns);
      let at = offset;
      for (let i = 0; i < runs.length; i++) {
        const run = runs[i] as AllocationRun;
        expect(run.lengthBytes, where).toBeGreaterThan(0);
        if (i > 0) expect(run.status, `${where}: runs alternate`).not.toBe(runs[i - 1]?.status);
        for (let pos = at; pos < at + run.lengthBytes; pos += BLOCK_SIZE_BYTES - (pos % BLOCK_SIZE_BYTES)) {
          const block = Math.floor(pos / BLOCK_SIZE_BYTES);
          expect(run.status === "data", `${where}: byte ${pos}`).toBe(modelHasData(chain, block));
        }
        at += run.lengthBytes;
      }
      expect(at, where).toBeLessThanOrEqual(offset + length);
      if (runs.length < maxRuns) expect(at, `${where}: covers the range`).toBe(offset + length);
    }
  });

  it("refuses a range past the end (OUT_OF_RANGE) and a deleted view (VOLUME_NOT_FOUND)", () => {
    const chain = randomChain(seededRandom(1), 2, 1);
    expect(() => allocationMap(view(chain, 2 * EXTENT_BYTES), EXTENT_BYTES, EXTENT_BYTES, 2 * EXTENT_BYTES, 10)).toThrow(
      expect.objectContaining({ code: "OUT_OF_RANGE" }),
    );
    expect(() => allocationMap({ ...view(chain, EXTENT_BYTES), deleted: true }, EXTENT_BYTES, 0, 4096, 10)).toThrow(
      expect.objectContaining({ code: "VOLUME_NOT_FOUND" }),
    );
  });

  it("an extent no layer holds is one hole, whatever its size", () => {
    const empty = view([new Layer({ id: 1, parentId: null, volumeUid: "u" })], 4 * 1024 * EXTENT_BYTES);
    expect(allocationMap(empty, EXTENT_BYTES, 512, 4 * 1024 * EXTENT_BYTES - 512, 1)).toEqual([
      { lengthBytes: 4 * 1024 * EXTENT_BYTES - 512, status: "hole" },
    ]);
  });
});
