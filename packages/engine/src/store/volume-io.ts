import assert from "node:assert";
import { KeelsonError } from "@keelson/sdk";
import { BlockState, setStates } from "./block-states.js";
import { releaseUnused } from "./entry-space.js";
import { Completion, checkRange, type IoCallback, ioError } from "./io-completion.js";
import type { ExtentEntry, Layer } from "./layer.js";
import { BLOCK_SIZE_BYTES } from "./layout.js";
import { type Pool, poolCore } from "./pool.js";
import type { PoolCore } from "./pool-core.js";
import type { ChainView, Volume } from "./volume.js";
import { readCore } from "./volume-read.js";

export type { IoCallback };

// The write path (aligned writes concurrent, unaligned ones read-modify-write), zeroing and flush;
// the entry points at the end take the pool callers hold.

/** How a zeroing request may be carried out. */
export interface ZeroOptions {
  /** TRIM: the range need not read back as zero, and partial blocks are left alone. */
  trim: boolean;
  /** Allocate and write real zeros instead of zero markers (NBD_CMD_FLAG_NO_HOLE). */
  noHole: boolean;
  /** Durable before completion. */
  fua: boolean;
}

/** Zeros written for NO_HOLE and partial blocks come from here, at most this much per write. */
const ZERO_CHUNK = Buffer.alloc(1024 * 1024);

class WritePart {
  readonly pool: PoolCore;
  readonly layer: Layer;
  readonly entry: ExtentEntry;
  readonly completion: Completion;
  readonly data: Buffer;
  /** Byte range within the extent. */
  readonly from: number;
  readonly to: number;
  /** Where `from` lies in the pool's data area, in bytes (in the entry's extent, or its block map's run). */
  readonly dataByte: number;
  /** Bytes of the range written so far (pwrite may write less than asked). */
  written = 0;
  readonly onWrite: (error: NodeJS.ErrnoException | null, bytesWritten: number) => void;

  constructor(
    pool: PoolCore,
    layer: Layer,
    entry: ExtentEntry,
    c: Completion,
    data: Buffer,
    from: number,
    to: number,
    dataByte: number,
  ) {
    this.pool = pool;
    this.layer = layer;
    this.entry = entry;
    this.completion = c;
    this.data = data;
    this.from = from;
    this.to = to;
    this.dataByte = dataByte;
    this.onWrite = (error, n) => this.#onWrite(error, n);
  }

  start(): void {
    const pos = this.pool.layout.dataOffset + this.dataByte + this.written;
    this.pool.device.io.write(
      this.pool.device.dataFd,
      this.data,
      this.written,
      this.to - this.from - this.written,
      pos,
      this.onWrite,
    );
  }

  #onWrite(error: NodeJS.ErrnoException | null, n: number): void {
    if (!error) {
      this.written += n;
      if (this.written < this.to - this.from && n > 0) return this.start();
    }
    this.entry.pendingWrites--;
    if (!error && n > 0) {
      // Blocks become visible only now, so a read never sees an extent's old contents. An overwrite of
      // blocks that hold data already changes no metadata: the next FLUSH then only syncs the data.
      if (setStates(this.entry.states, this.from / BLOCK_SIZE_BYTES, this.to / BLOCK_SIZE_BYTES, BlockState.DATA))
        this.pool.markDirty(this.entry);
      if (this.entry.releaseDeferred && this.entry.pendingWrites === 0) releaseUnused(this.pool, this.layer, this.entry);
      return this.completion.done(null);
    }
    releaseUnused(this.pool, this.layer, this.entry);
    this.completion.done(
      error ? ioError(error, "pool write") : new KeelsonError({ code: "INTERNAL", message: "pool write made no progress" }),
    );
  }
}

/** NO_SPACE for want of extent entries rather than of space (see `planLayout`). */
function metadataFull(pool: PoolCore, volume: Volume, newEntries: number): KeelsonError {
  return new KeelsonError({
    code: "NO_SPACE",
    message: `pool metadata is full: it holds its maximum of ${pool.layout.maxEntries} extent entries (volume ${volume.name} needs ${newEntries} more); delete snapshots or volumes`,
  });
}

function noSpace(pool: PoolCore, volume: Volume, neededBlocks: number): KeelsonError {
  return new KeelsonError({
    code: "NO_SPACE",
    message: `pool is full: volume ${volume.name} needs ${neededBlocks * BLOCK_SIZE_BYTES} more bytes, ${pool.blocks.allocatableBlocks * BLOCK_SIZE_BYTES} free`,
  });
}

/**
 * Whether a write of blocks [firstBlock, endBlock) into an entry without space gets a whole
 * extent: always on pools without sub-extent allocation, else only when it covers the extent.
 */
function wantsWholeExtent(pool: PoolCore, firstBlock: number, endBlock: number): boolean {
  return !pool.layout.subExtent || (firstBlock === 0 && endBlock === pool.blocks.blocksPerExtent);
}

/** Maps every block of [firstBlock, endBlock) that has no physical block, in runs as long as the allocator gives. */
function mapBlocks(pool: PoolCore, layer: Layer, entry: ExtentEntry, firstBlock: number, endBlock: number): void {
  entry.blocks ??= new Int32Array(pool.blocks.blocksPerExtent).fill(-1);
  const blocks = entry.blocks;
  for (let b = firstBlock; b < endBlock; ) {
    if ((blocks[b] as number) >= 0) {
      b++;
      continue;
    }
    let runEnd = b + 1;
    while (runEnd < endBlock && (blocks[runEnd] as number) < 0) runEnd++;
    // Right after the block before, so sequential writes stay sequential on disk.
    const hint = b > 0 && (blocks[b - 1] as number) >= 0 ? (blocks[b - 1] as number) + 1 : -1;
    const run = pool.blocks.allocate(runEnd - b, hint);
    assert(run !== null, "blocks counted free before the allocation");
    for (let i = 0; i < run.length; i++) blocks[b + i] = run.first + i;
    layer.allocatedBlocks += run.length;
    b += run.length;
  }
}

/** Gives every block of [offset, end) space in the head, or fails having allocated nothing. */
function allocateRange(pool: PoolCore, volume: Volume, offset: number, end: number): KeelsonError | null {
  const head = volume.head;
  const extentBytes = pool.layout.extentSizeBytes;
  const perExtent = extentBytes / BLOCK_SIZE_BYTES;
  const first = Math.floor(offset / extentBytes);
  const last = Math.floor((end - 1) / extentBytes);
  const blockRange = (l: number): [number, number] => [
    Math.max(0, (offset - l * extentBytes) / BLOCK_SIZE_BYTES),
    Math.min(perExtent, (end - l * extentBytes) / BLOCK_SIZE_BYTES),
  ];
  let wholeExtents = 0;
  let blocksNeeded = 0;
  let newEntries = 0;
  for (let l = first; l <= last; l++) {
    const e = head.extents.get(l);
    if (e === undefined) newEntries++;
    if (e !== undefined && e.phys >= 0) continue;
    const [fb, lb] = blockRange(l);
    if (e?.blocks) {
      for (let b = fb; b < lb; b++) if ((e.blocks[b] as number) < 0) blocksNeeded++;
    } else if (wantsWholeExtent(pool, fb, lb) && wholeExtents < pool.allocator.freeCount) {
      wholeExtents++;
    } else if (pool.layout.subExtent) {
      blocksNeeded += lb - fb;
    } else {
      return noSpace(pool, volume, (wholeExtents + 1) * perExtent);
    }
  }
  const needed = wholeExtents * perExtent + blocksNeeded;
  if (needed > pool.blocks.allocatableBlocks) return noSpace(pool, volume, needed);
  if (pool.entryCount + newEntries > pool.layout.maxEntries) return metadataFull(pool, volume, newEntries);
  // An overwrite of space the head holds already (the common case) allocates nothing.
  if (needed === 0 && newEntries === 0) return null;
  // Whole extents first: a block allocation may open a new slab, which could take an extent counted for them.
  const mapped: number[] = [];
  for (let l = first; l <= last; l++) {
    const e = head.extents.get(l) ?? pool.addEntry(head, l);
    if (e.phys >= 0) continue;
    const [fb, lb] = blockRange(l);
    if (e.blocks === null && wholeExtents > 0 && wantsWholeExtent(pool, fb, lb)) {
      e.phys = pool.allocator.allocate();
      assert(e.phys >= 0, "extents counted free before the allocation");
      wholeExtents--;
      head.allocatedExtents++;
      pool.markDirty(e);
      continue;
    }
    mapped.push(l);
  }
  assert(wholeExtents === 0, "every whole extent counted was allocated");
  for (const l of mapped) {
    const [fb, lb] = blockRange(l);
    mapBlocks(pool, head, head.extents.get(l) as ExtentEntry, fb, lb);
  }
  return null;
}

/** Writes block-aligned `data` at `offset` into the head layer. The caller holds the volume's gate. */
function writeAligned(
  pool: PoolCore,
  volume: Volume,
  offset: number,
  data: Buffer,
  cb: IoCallback,
  retries = ALLOCATION_RETRIES,
): void {
  const end = offset + data.length;
  const failed = allocateRange(pool, volume, offset, end);
  if (!failed) {
    pool.reclaimIfLow();
    return writeAllocated(pool, volume, offset, data, cb);
  }
  // Extents freed by trims or deletes stay quarantined until a commit makes the freeing durable. A
  // full pool with some in quarantine commits now and tries again, rather than failing a write
  // that fits until the client's next FLUSH (other writes may take what one commit frees).
  const awaitingCommit = pool.allocator.awaitingCommitCount + pool.blocks.awaitingCommitCount;
  if (failed.code !== "NO_SPACE" || retries === 0 || awaitingCommit === 0) return cb(failed);
  pool.flush().then(
    // The commit's extents become free only after the reads in flight at its end (they may still
    // read them): queued behind that, the retry sees them.
    () => pool.reads.afterCurrentReads(() => writeAligned(pool, volume, offset, data, cb, retries - 1)),
    (error: unknown) => cb(commitError(error)),
  );
}

/** Commits a write that finds the pool full may wait for before it fails NO_SPACE. */
const ALLOCATION_RETRIES = 3;

/** Writes `data` at `offset` into head extents already allocated for it. */
function writeAllocated(pool: PoolCore, volume: Volume, offset: number, data: Buffer, cb: IoCallback): void {
  const end = offset + data.length;
  const c = new Completion(cb);
  const head = volume.head;
  const extentBytes = pool.layout.extentSizeBytes;
  for (let pos = offset; pos < end; ) {
    const logical = Math.floor(pos / extentBytes);
    const base = logical * extentBytes;
    const segEnd = Math.min(end, base + extentBytes);
    const entry = head.extents.get(logical) as ExtentEntry;
    if (entry.blocks) {
      writeMapped(pool, head, entry, c, data.subarray(pos - offset, segEnd - offset), pos - base, segEnd - base);
    } else {
      entry.pendingWrites++;
      c.pending++;
      const part = data.subarray(pos - offset, segEnd - offset);
      new WritePart(pool, head, entry, c, part, pos - base, segEnd - base, entry.phys * extentBytes + (pos - base)).start();
    }
    pos = segEnd;
  }
  c.done(null);
}

/** Writes bytes [from, to) of a block-mapped extent: one write per run of blocks consecutive on disk. */
function writeMapped(
  pool: PoolCore,
  head: Layer,
  entry: ExtentEntry,
  c: Completion,
  data: Buffer,
  from: number,
  to: number,
): void {
  const blocks = entry.blocks as Int32Array;
  const lastBlock = to / BLOCK_SIZE_BYTES;
  for (let b = from / BLOCK_SIZE_BYTES; b < lastBlock; ) {
    const src = blocks[b] as number;
    assert(src >= 0, "a written block was allocated");
    let runEnd = b + 1;
    while (runEnd < lastBlock && blocks[runEnd] === src + (runEnd - b)) runEnd++;
    const at = b * BLOCK_SIZE_BYTES - from;
    entry.pendingWrites++;
    c.pending++;
    const part = data.subarray(at, at + (runEnd - b) * BLOCK_SIZE_BYTES);
    new WritePart(pool, head, entry, c, part, b * BLOCK_SIZE_BYTES, runEnd * BLOCK_SIZE_BYTES, src * BLOCK_SIZE_BYTES).start();
    b = runEnd;
  }
}

/** Makes everything completed so far durable (NBD FLUSH), then calls back. */
function flushCore(pool: PoolCore, cb: IoCallback): void {
  pool.flush().then(
    () => cb(null),
    (e: unknown) => cb(commitError(e)),
  );
}

function commitError(e: unknown): KeelsonError {
  return e instanceof KeelsonError
    ? e
    : new KeelsonError({ code: "INTERNAL", message: `pool commit failed: ${String(e)}`, cause: e });
}

function finishWrite(pool: PoolCore, error: KeelsonError | null, fua: boolean, cb: IoCallback): void {
  if (error || !fua) return cb(error);
  flushCore(pool, cb);
}

/** Read-modify-write for a write that does not cover whole blocks; runs with the gate held exclusively. */
function writeUnaligned(pool: PoolCore, volume: Volume, offset: number, data: Buffer, fua: boolean, cb: IoCallback): void {
  volume.gate.enterExclusive(() => {
    const start = Math.floor(offset / BLOCK_SIZE_BYTES) * BLOCK_SIZE_BYTES;
    const end = Math.ceil((offset + data.length) / BLOCK_SIZE_BYTES) * BLOCK_SIZE_BYTES;
    const whole = Buffer.allocUnsafe(end - start);
    readCore(pool, volume, start, end - start, whole, 0, (readError) => {
      if (readError) {
        volume.gate.leaveExclusive();
        return cb(readError);
      }
      data.copy(whole, offset - start);
      writeAligned(pool, volume, start, whole, (error) => {
        volume.gate.leaveExclusive();
        finishWrite(pool, error, fua, cb);
      });
    });
  });
}

/** Writes `data` at `offset`. Block-aligned writes run concurrently; others are read-modify-write. */
function writeCore(pool: PoolCore, volume: Volume, offset: number, data: Buffer, fua: boolean, cb: IoCallback): void {
  const bad = checkRange(volume, offset, data.length) ?? pool.failure;
  if (bad) return cb(bad);
  if (data.length === 0) return finishWrite(pool, null, fua, cb);
  if (offset % BLOCK_SIZE_BYTES !== 0 || data.length % BLOCK_SIZE_BYTES !== 0) {
    return writeUnaligned(pool, volume, offset, data, fua, cb);
  }
  const gate = volume.gate;
  gate.runShared(() =>
    writeAligned(pool, volume, offset, data, (error) => {
      gate.leaveShared();
      finishWrite(pool, error, fua, cb);
    }),
  );
}

/** Marks whole blocks [firstBlock, lastBlock) of one extent as zero in the head, freeing space where it can. */
function zeroBlocks(pool: PoolCore, volume: Volume, logical: number, firstBlock: number, lastBlock: number): KeelsonError | null {
  const head = volume.head;
  // A layer with no parent reads absent blocks as zero, so it needs no markers.
  const state = head.record.parentId === null ? BlockState.ABSENT : BlockState.ZERO;
  let entry = head.extents.get(logical);
  if (entry === undefined) {
    if (state === BlockState.ABSENT) return null;
    if (pool.entryCount >= pool.layout.maxEntries) return metadataFull(pool, volume, 1);
    entry = pool.addEntry(head, logical);
  }
  // A trim of blocks trimmed already changes nothing to commit.
  if (setStates(entry.states, firstBlock, lastBlock, state)) pool.markDirty(entry);
  releaseUnused(pool, head, entry);
  return null;
}

function zeroWholeBlocks(pool: PoolCore, volume: Volume, start: number, end: number): KeelsonError | null {
  const extentBytes = pool.layout.extentSizeBytes;
  for (let pos = start; pos < end; ) {
    const logical = Math.floor(pos / extentBytes);
    const base = logical * extentBytes;
    const segEnd = Math.min(end, base + extentBytes);
    const failed = zeroBlocks(pool, volume, logical, (pos - base) / BLOCK_SIZE_BYTES, (segEnd - base) / BLOCK_SIZE_BYTES);
    if (failed) return failed;
    pos = segEnd;
  }
  return null;
}

/** Writes real zeros over [offset, end), one extent at a time (NO_HOLE and partial blocks). */
function writeZeros(pool: PoolCore, volume: Volume, offset: number, end: number, cb: IoCallback): void {
  if (offset >= end) return cb(null);
  const extentBytes = pool.layout.extentSizeBytes;
  const next = Math.min(end, offset + ZERO_CHUNK.length, (Math.floor(offset / extentBytes) + 1) * extentBytes);
  writeCore(pool, volume, offset, ZERO_CHUNK.subarray(0, next - offset), false, (error) => {
    if (error) return cb(error);
    writeZeros(pool, volume, next, end, cb);
  });
}

/**
 * Zeroes (WRITE_ZEROES) or discards (TRIM) a range. Whole blocks become zero
 * markers and give their space back; partial blocks are written with zeros
 * (WRITE_ZEROES) or left alone (TRIM).
 */
function zeroCore(pool: PoolCore, volume: Volume, offset: number, length: number, options: ZeroOptions, cb: IoCallback): void {
  const bad = checkRange(volume, offset, length) ?? pool.failure;
  if (bad) return cb(bad);
  const end = offset + length;
  if (options.noHole) return writeZeros(pool, volume, offset, end, (e) => finishWrite(pool, e, options.fua, cb));
  const start = Math.ceil(offset / BLOCK_SIZE_BYTES) * BLOCK_SIZE_BYTES;
  const stop = Math.max(start, Math.floor(end / BLOCK_SIZE_BYTES) * BLOCK_SIZE_BYTES);
  const gate = volume.gate;
  gate.runShared(() => {
    const failed = start < stop ? zeroWholeBlocks(pool, volume, start, stop) : null;
    gate.leaveShared();
    if (failed || options.trim) return finishWrite(pool, failed, options.fua, cb);
    // Partial blocks at either edge get real zeros.
    writeZeros(pool, volume, offset, Math.min(end, start), (e1) => {
      if (e1) return cb(e1);
      writeZeros(pool, volume, Math.max(stop, offset), end, (e2) => finishWrite(pool, e2, options.fua, cb));
    });
  });
}

// The entry points take the pool callers hold; the work is done on its state.

/** Reads `length` bytes at `offset` of the volume or snapshot into `buf` at `bufOffset`. Any alignment. */
export function readVolume(
  pool: Pool,
  volume: ChainView,
  offset: number,
  length: number,
  buf: Buffer,
  bufOffset: number,
  cb: IoCallback,
): void {
  readCore(poolCore(pool), volume, offset, length, buf, bufOffset, cb);
}

/** Writes `data` at `offset`. Block-aligned writes run concurrently; others are read-modify-write. */
export function writeVolume(pool: Pool, volume: Volume, offset: number, data: Buffer, fua: boolean, cb: IoCallback): void {
  writeCore(poolCore(pool), volume, offset, data, fua, cb);
}

/** Zeroes (WRITE_ZEROES) or discards (TRIM) a range; see {@link zeroCore}. */
export function zeroVolume(
  pool: Pool,
  volume: Volume,
  offset: number,
  length: number,
  options: ZeroOptions,
  cb: IoCallback,
): void {
  zeroCore(poolCore(pool), volume, offset, length, options, cb);
}

/** Makes everything completed so far durable (NBD FLUSH), then calls back. */
export function flushVolume(pool: Pool, cb: IoCallback): void {
  flushCore(poolCore(pool), cb);
}
