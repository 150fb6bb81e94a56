import assert from "node:assert";
import { allStates, BlockState, getState } from "./block-states.js";
import { checkRange } from "./io-completion.js";
import type { ExtentEntry, Layer } from "./layer.js";
import { BLOCK_SIZE_BYTES } from "./layout.js";
import type { ChainView } from "./volume.js";

// Which parts of a volume or snapshot hold data, from the layers' block
// states alone (no disk read): the answer to NBD_CMD_BLOCK_STATUS's
// base:allocation, so that nbdcopy, qemu-img convert and backups skip what
// was never written.

/** Status of a run of bytes. A hole reads as zeros and takes no pool space; data does both. */
export type AllocationStatus = "data" | "hole";

/** One run of bytes with one status; runs of a map are consecutive and alternate. */
export interface AllocationRun {
  lengthBytes: number;
  status: AllocationStatus;
}

/** Whether block `block` resolves to data through one extent's entries of a chain (newest layer first). */
function blockHasData(entries: Array<ExtentEntry | undefined>, block: number): boolean {
  for (const e of entries) {
    if (e === undefined) continue;
    const s = getState(e.states, block);
    if (s === BlockState.DATA) return true;
    if (s === BlockState.ZERO) return false;
  }
  return false;
}

/**
 * The allocation of `view` from `offset` on, as consecutive runs that cover
 * at most `length` bytes: fewer when `maxRuns` runs are reached first (the
 * caller asks again from where they end). Synchronous and bounded by the
 * range's blocks. VOLUME_NOT_FOUND (deleted) or OUT_OF_RANGE is thrown as a
 * KeelsonError.
 */
export function allocationMap(
  view: ChainView,
  extentBytes: number,
  offset: number,
  length: number,
  maxRuns: number,
): AllocationRun[] {
  const bad = checkRange(view, offset, length);
  if (bad) throw bad;
  assert(maxRuns >= 1, "an allocation map holds at least one run");
  assert(extentBytes % BLOCK_SIZE_BYTES === 0, "extents hold whole blocks");
  const runs: AllocationRun[] = [];
  const end = offset + length;
  const add = (from: number, to: number, status: AllocationStatus): boolean => {
    const last = runs[runs.length - 1];
    if (last?.status === status) last.lengthBytes += to - from;
    else if (runs.length === maxRuns) return false;
    else runs.push({ lengthBytes: to - from, status });
    return true;
  };
  const entries: Array<ExtentEntry | undefined> = [];
  for (let pos = offset; pos < end; ) {
    const logical = Math.floor(pos / extentBytes);
    const extentEnd = Math.min(end, (logical + 1) * extentBytes);
    entries.length = 0;
    for (const layer of view.chain as Layer[]) entries.push(layer.extents.get(logical));
    if (entries.every((e) => e === undefined)) {
      // Never written in any layer: the whole extent is a hole, without looking at its blocks.
      if (!add(pos, extentEnd, "hole")) break;
      pos = extentEnd;
      continue;
    }
    // The newest layer holding this extent decides every block it holds: when it holds all of the range as
    // data (a volume written through) or as zeros (a trimmed one), one run, without resolving block by block.
    const first = entries.find((e) => e !== undefined) as ExtentEntry;
    const firstBlock = Math.floor((pos - logical * extentBytes) / BLOCK_SIZE_BYTES);
    const endBlock = Math.ceil((extentEnd - logical * extentBytes) / BLOCK_SIZE_BYTES);
    const whole = allStates(first.states, firstBlock, endBlock, BlockState.DATA)
      ? "data"
      : allStates(first.states, firstBlock, endBlock, BlockState.ZERO)
        ? "hole"
        : null;
    if (whole !== null) {
      if (!add(pos, extentEnd, whole)) break;
      pos = extentEnd;
      continue;
    }
    let stopped = false;
    while (pos < extentEnd) {
      const block = Math.floor((pos - logical * extentBytes) / BLOCK_SIZE_BYTES);
      const blockEnd = Math.min(extentEnd, logical * extentBytes + (block + 1) * BLOCK_SIZE_BYTES);
      if (!add(pos, blockEnd, blockHasData(entries, block) ? "data" : "hole")) {
        stopped = true;
        break;
      }
      pos = blockEnd;
    }
    if (stopped) break;
  }
  assert(runs.length >= 1 && runs.length <= maxRuns, "an allocation map has between one and maxRuns runs");
  return runs;
}
