import { allStates, BlockState, getState, hasData, isEmpty } from "./block-states.js";
import type { ExtentEntry, Layer } from "./layer.js";
import type { PoolCore } from "./pool-core.js";

// The space an extent entry holds: a whole extent or a block map (sub-extent allocation), and
// giving back what no longer holds data. Used by the write path and by layer folds.

/**
 * Gives a whole extent's blocks a block map (sub-extent allocation), so blocks that no longer
 * hold data can be freed one by one: the extent becomes a slab whose blocks the entry owns.
 */
export function carveEntry(pool: PoolCore, layer: Layer, entry: ExtentEntry): void {
  const perExtent = pool.blocks.blocksPerExtent;
  pool.blocks.carve(entry.phys);
  const blocks = new Int32Array(perExtent);
  for (let b = 0; b < perExtent; b++) blocks[b] = entry.phys * perExtent + b;
  entry.blocks = blocks;
  entry.phys = -1;
  layer.allocatedExtents--;
  layer.allocatedBlocks += perExtent;
}

/**
 * Frees what an entry no longer needs: on a pool with sub-extent allocation every block that
 * holds no data (a whole extent is carved for it), else its extent once no block holds data;
 * the entry once it has no state.
 */
export function releaseUnused(pool: PoolCore, layer: Layer, entry: ExtentEntry): void {
  if (entry.pendingWrites > 0) {
    // A write into this entry is in flight (it may be writing into a block a trim just emptied): the
    // last one to finish releases, so a trim next to a write does not leave its blocks held.
    entry.releaseDeferred = true;
    return;
  }
  entry.releaseDeferred = false;
  if (entry.phys >= 0 && !hasData(entry.states)) {
    pool.releaseExtent(entry.phys);
    entry.phys = -1;
    layer.allocatedExtents--;
    pool.markDirty(entry);
  }
  if (entry.phys >= 0 && pool.layout.subExtent && !allStates(entry.states, 0, pool.blocks.blocksPerExtent, BlockState.DATA)) {
    carveEntry(pool, layer, entry);
  }
  if (entry.blocks) releaseUnusedBlocks(pool, layer, entry, entry.blocks);
  if (entry.phys < 0 && entry.blocks === null && isEmpty(entry.states) && layer.extents.get(entry.logical) === entry)
    pool.removeEntry(layer, entry);
}

function releaseUnusedBlocks(pool: PoolCore, layer: Layer, entry: ExtentEntry, blocks: Int32Array): void {
  let mapped = 0;
  for (let b = 0; b < blocks.length; b++) {
    const block = blocks[b] as number;
    if (block < 0) continue;
    if (getState(entry.states, b) === BlockState.DATA) {
      mapped++;
      continue;
    }
    pool.releaseBlock(block);
    blocks[b] = -1;
    layer.allocatedBlocks--;
  }
  pool.markDirty(entry);
  if (mapped === 0) entry.blocks = null;
}

/**
 * Frees what every entry holds without data, at open: a write's space is
 * recorded in the next commit before its data lands (so a commit while it is
 * in flight records the space without the data), and a crash before the
 * commit after it leaves the layer holding space it does not read.
 */
export function releaseUnusedAtOpen(pool: PoolCore): void {
  for (const layer of pool.layers.values()) {
    for (const entry of [...layer.extents.values()]) releaseUnused(pool, layer, entry);
  }
}
