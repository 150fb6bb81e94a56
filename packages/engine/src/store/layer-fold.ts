import { KeelsonError } from "@keelson/sdk";
import type { DeviceIo } from "../device-io/device-io.js";
import { readOnce, writeAll } from "../device-io/device-io-promises.js";
import { BlockState, getState, setStates } from "./block-states.js";
import { ExtentEntry, type Layer } from "./layer.js";
import { BLOCK_SIZE_BYTES } from "./layout.js";
import type { WriteGate } from "./write-gate.js";

/** Largest single copy while folding; bounds the buffer and how long one step holds a volume's gate. */
const MAX_FOLD_COPY_BYTES = 1024 * 1024;

/** What a fold needs from the pool. */
export interface FoldStore {
  /** The pool's disk I/O and the fd its data blocks are read and written through (O_DIRECT or not, as the volumes'). */
  readonly io: DeviceIo;
  readonly fd: number;
  readonly dataOffset: number;
  readonly extentSizeBytes: number;
  readonly stateBytes: number;
  /** Gives an entry of `layer` a block map over its whole extent (sub-extent allocation; see entry-space.ts). */
  carve(layer: Layer, entry: ExtentEntry): void;
  /** Frees the space of an entry of `layer` that holds no data (see entry-space.ts). */
  releaseUnused(layer: Layer, entry: ExtentEntry): void;
  /** Records an entry (or its removal, when it is empty with phys -1) in the next commit. */
  markDirty(entry: ExtentEntry): void;
  /** Frees a physical extent after the next durable commit and the reads that may still use it. */
  releaseExtent(phys: number): void;
  /** Frees every block of a block map likewise. */
  releaseBlocks(blocks: Int32Array): void;
  /** One entry fewer in the pool (its record was dropped, not moved). */
  entryGone(): void;
}

/** Blocks [from, to) of one extent that must be copied. */
interface BlockRun {
  from: number;
  to: number;
}

/** Runs of blocks absent in `child` that hold data in `parent`. */
function blocksToCopy(parent: ExtentEntry, child: ExtentEntry, blocks: number): BlockRun[] {
  const runs: BlockRun[] = [];
  for (let b = 0; b < blocks; b++) {
    if (getState(child.states, b) !== BlockState.ABSENT || getState(parent.states, b) !== BlockState.DATA) continue;
    const last = runs[runs.length - 1];
    if (last && last.to === b) last.to = b + 1;
    else runs.push({ from: b, to: b + 1 });
  }
  return runs;
}

/** Gives every block absent in `child` the state it has in `parent`. */
function mergeStates(parent: ExtentEntry, child: ExtentEntry, blocks: number): void {
  for (let b = 0; b < blocks; b++) {
    if (getState(child.states, b) !== BlockState.ABSENT) continue;
    const s = getState(parent.states, b);
    if (s !== BlockState.ABSENT) setStates(child.states, b, b + 1, s);
  }
}

/** Blocks a block map owns. */
function mappedCount(blocks: Int32Array): number {
  let n = 0;
  for (let i = 0; i < blocks.length; i++) if ((blocks[i] as number) >= 0) n++;
  return n;
}

/** Forgets `entry` in `layer`, recording its removal; its space is released unless `keepSpace` (it moved). */
function dropEntry(store: FoldStore, layer: Layer, entry: ExtentEntry, keepSpace: boolean): void {
  layer.extents.delete(entry.logical);
  if (entry.phys >= 0) {
    layer.allocatedExtents--;
    if (!keepSpace) store.releaseExtent(entry.phys);
  }
  if (entry.blocks) {
    layer.allocatedBlocks -= mappedCount(entry.blocks);
    if (!keepSpace) store.releaseBlocks(entry.blocks);
  }
  entry.phys = -1;
  entry.blocks = null;
  entry.states = new Uint8Array(store.stateBytes);
  store.markDirty(entry);
}

/** Where block `block` of `entry` lies in the pool's data area, in bytes. */
function blockByte(store: FoldStore, entry: ExtentEntry, block: number): number {
  if (entry.blocks) return (entry.blocks[block] as number) * BLOCK_SIZE_BYTES;
  return entry.phys * store.extentSizeBytes + block * BLOCK_SIZE_BYTES;
}

/** Copies a run of the parent's blocks into the same blocks of the child's whole extent. */
async function copyRun(store: FoldStore, from: ExtentEntry, to: ExtentEntry, run: BlockRun): Promise<void> {
  for (let b = run.from; b < run.to; ) {
    // As many blocks as lie consecutive in the parent's space, up to the copy bound.
    let end = b + 1;
    const maxEnd = Math.min(run.to, b + MAX_FOLD_COPY_BYTES / BLOCK_SIZE_BYTES);
    while (end < maxEnd && blockByte(store, from, end) === blockByte(store, from, b) + (end - b) * BLOCK_SIZE_BYTES) end++;
    const length = (end - b) * BLOCK_SIZE_BYTES;
    const buf = Buffer.allocUnsafe(length);
    const bytesRead = await readOnce(store.io, store.fd, buf, 0, length, store.dataOffset + blockByte(store, from, b));
    if (bytesRead !== length) throw new KeelsonError({ code: "INTERNAL", message: "short read while folding a layer" });
    await writeAll(store.io, store.fd, buf, store.dataOffset + blockByte(store, to, b), "a write while folding a layer");
    b = end;
  }
}

/**
 * Folds one extent of `parent` into `child`, keeping what `child` (and every
 * layer above it) reads unchanged at every moment: data is copied into blocks
 * the child does not use, and only then do the child's states point at it.
 * Without a copy when it can: a missing child entry takes the parent's whole,
 * a child entry holding only zero markers adopts the parent's space, and a
 * block-mapped child takes over the parent's blocks.
 */
async function foldExtent(store: FoldStore, parent: Layer, child: Layer, logical: number): Promise<void> {
  const p = parent.extents.get(logical);
  if (p === undefined) return;
  const blocks = store.stateBytes * 4;
  const c = child.extents.get(logical);
  if (c === undefined) {
    const moved = new ExtentEntry(child.id, logical, p.phys, p.states.slice(), p.blocks);
    child.extents.set(logical, moved);
    if (moved.phys >= 0) child.allocatedExtents++;
    if (moved.blocks) child.allocatedBlocks += mappedCount(moved.blocks);
    store.markDirty(moved);
    return dropEntry(store, parent, p, true);
  }
  const runs = blocksToCopy(p, c, blocks);
  if (runs.length > 0 && c.phys < 0 && c.blocks === null) {
    c.phys = p.phys;
    c.blocks = p.blocks;
    if (c.phys >= 0) child.allocatedExtents++;
    if (c.blocks) child.allocatedBlocks += mappedCount(c.blocks);
    mergeStates(p, c, blocks);
    store.markDirty(c);
    store.entryGone();
    dropEntry(store, parent, p, true);
    // The parent's blocks the child's zero markers hide hold nothing it reads.
    return store.releaseUnused(child, c);
  }
  if (runs.length > 0 && c.blocks) {
    if (p.phys >= 0) store.carve(parent, p);
    const from = p.blocks as Int32Array;
    for (const run of runs) {
      for (let b = run.from; b < run.to; b++) {
        // A block the child maps without data in it (a write that failed) is let go for the parent's.
        const stale = c.blocks[b] as number;
        if (stale >= 0) store.releaseBlocks(Int32Array.of(stale));
        else child.allocatedBlocks++;
        c.blocks[b] = from[b] as number;
        from[b] = -1;
        parent.allocatedBlocks--;
      }
    }
  } else {
    for (const run of runs) await copyRun(store, p, c, run);
  }
  mergeStates(p, c, blocks);
  store.markDirty(c);
  store.entryGone();
  dropEntry(store, parent, p, false);
}

function underGate<T>(gate: WriteGate | null, fn: () => Promise<T>): Promise<T> {
  if (gate === null) return fn();
  return new Promise<T>((resolve, reject) => {
    gate.enterExclusive(() => {
      fn().then(
        (value) => {
          gate.leaveExclusive();
          resolve(value);
        },
        (error: unknown) => {
          gate.leaveExclusive();
          reject(error);
        },
      );
    });
  });
}

/**
 * Moves every extent of `parent` into its only child. `gate` is the gate of
 * the volume whose writable head `child` is (null for a sealed child); each
 * extent's step holds it exclusively, so I/O continues between steps and a
 * write never races a copy into the same extent. The caller re-parents the
 * child and deletes the emptied parent afterwards.
 */
export async function foldIntoChild(store: FoldStore, parent: Layer, child: Layer, gate: WriteGate | null): Promise<void> {
  for (const logical of [...parent.extents.keys()]) {
    await underGate(gate, () => foldExtent(store, parent, child, logical));
  }
}
