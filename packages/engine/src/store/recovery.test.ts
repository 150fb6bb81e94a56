import { describe, expect, it } from "vitest";
import { BlockState, newStates, setStates } from "./block-states.js";
import type { EntryRecord } from "./catalog.js";
import { MIN_EXTENT_SIZE_BYTES, planLayout } from "./layout.js";
import type { RecoveredMetadata } from "./metadata-log.js";
import { rebuildState } from "./recovery.js";

// Extents of four blocks: one byte of the recovery's claimed-block bitmap covers two extents.
const layout = planLayout(64 * 1024 * 1024, "recovery-test", MIN_EXTENT_SIZE_BYTES);
const BPE = MIN_EXTENT_SIZE_BYTES / 4096;

function entry(layerId: number, logical: number, phys: number, blocks: number[] | null): EntryRecord {
  const states = newStates(BPE / 4);
  setStates(states, 0, BPE, BlockState.DATA);
  const map = blocks ? Int32Array.from(blocks) : null;
  return { layerId, logical, phys: map ? -1 : phys, states, blocks: map };
}

function recovered(entries: EntryRecord[]): RecoveredMetadata {
  const layers = [
    { id: 1, parentId: null, volumeUid: "a" },
    { id: 2, parentId: null, volumeUid: "b" },
  ];
  return {
    checkpoint: { seq: 1, slot: 0, catalog: { nextLayerId: 3, volumes: [], layers, snapshots: [] }, entries },
    batches: [],
    journalTailBytes: 0,
    nextSeq: 2,
  };
}

describe("rebuildState with block maps", () => {
  it("counts each layer's mapped blocks", () => {
    const state = rebuildState(
      recovered([entry(1, 0, 0, null), entry(2, 0, -1, [4, 5, 6, 7]), entry(2, 1, -1, [8, 9, 10, 11])]),
      layout,
    );
    expect(state.layers.get(1)?.allocatedExtents).toBe(1);
    expect(state.layers.get(2)?.allocatedBlocks).toBe(8);
  });

  it("refuses a block mapped twice, a block beyond the pool and a block inside an extent mapped whole", () => {
    expect(() => rebuildState(recovered([entry(1, 0, -1, [4, 5, 6, 7]), entry(2, 0, -1, [8, 9, 10, 7])]), layout)).toThrow(
      /block 7 is mapped twice/,
    );
    const beyond = layout.extentCount * BPE;
    expect(() => rebuildState(recovered([entry(1, 0, -1, [4, 5, 6, beyond])]), layout)).toThrow(/beyond the pool/);
    // Extent 1 (blocks 4-7) shares its bitmap byte with extent 0: only its own blocks count.
    expect(() => rebuildState(recovered([entry(1, 0, 1, null), entry(2, 0, -1, [0, 1, 2, 3])]), layout)).not.toThrow();
    expect(() => rebuildState(recovered([entry(1, 0, 1, null), entry(2, 0, -1, [0, 1, 2, 6])]), layout)).toThrow(
      /extent 1, which layer 1 maps whole, has blocks mapped one by one/,
    );
  });
});
