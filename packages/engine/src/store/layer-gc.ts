import createDebug from "debug";
import { carveEntry, releaseUnused } from "./entry-space.js";
import type { Layer } from "./layer.js";
import { type FoldStore, foldIntoChild } from "./layer-fold.js";
import type { PoolCore } from "./pool-core.js";

const debug = createDebug("keelson:store");

/** True when no volume head and no snapshot names the layer. */
function isHidden(core: PoolCore, layer: Layer): boolean {
  for (const v of core.volumes.values()) if (v.record.headLayerId === layer.id) return false;
  for (const s of core.snapshots.values()) if (s.record.layerId === layer.id) return false;
  return true;
}

/**
 * Garbage-collects from `start` down: a hidden layer with no child is
 * dropped (and its parent looked at next); one with a single child is
 * folded into it; one with more children stays until they are gone.
 */
export async function collect(core: PoolCore, start: Layer | null): Promise<void> {
  for (let layer = start; layer !== null && core.layers.has(layer.id) && isHidden(core, layer); ) {
    if (layer.children === 0) {
      layer = core.unlinkLeaf(layer);
      core.relink();
      continue;
    }
    if (layer.children === 1) await fold(core, layer);
    return;
  }
}

/** Collects every hidden layer (at open: finishes folds a crash interrupted). */
export async function collectAll(core: PoolCore): Promise<void> {
  for (const layer of [...core.layers.values()]) {
    if (!core.layers.has(layer.id) || layer.children > 1 || !isHidden(core, layer)) continue;
    if (layer.children === 1) core.foldsFinishedAtOpen++;
    await collect(core, layer);
  }
  await core.flush();
}

/** Folds a hidden layer into its only child while I/O to the child's volume continues. */
async function fold(core: PoolCore, layer: Layer): Promise<void> {
  const child = [...core.layers.values()].find((l) => l.parentId === layer.id) as Layer;
  const volume = [...core.volumes.values()].find((v) => v.record.headLayerId === child.id);
  const store: FoldStore = {
    io: core.device.io,
    fd: core.device.dataFd,
    dataOffset: core.layout.dataOffset,
    extentSizeBytes: core.layout.extentSizeBytes,
    stateBytes: core.stateBytes,
    markDirty: (entry) => core.markDirty(entry),
    releaseExtent: (phys) => core.releaseExtent(phys),
    releaseBlocks: (blocks) => core.releaseBlocks(blocks),
    carve: (owner, entry) => carveEntry(core, owner, entry),
    releaseUnused: (owner, entry) => releaseUnused(core, owner, entry),
    entryGone: () => {
      core.entryCount--;
    },
  };
  debug("folding layer %d (%d extents) into %d", layer.id, layer.extents.size, child.id);
  await foldIntoChild(store, layer, child, volume ? volume.gate : null);
  child.record = { ...child.record, parentId: layer.parentId };
  core.record({ op: "putLayer", layer: child.record });
  core.dropLayer(layer);
  core.relink();
}
