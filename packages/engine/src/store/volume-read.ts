import assert from "node:assert";
import { KeelsonError } from "@keelson/sdk";
import { allStates, BlockState, getState } from "./block-states.js";
import { Completion, checkRange, type IoCallback, ioError } from "./io-completion.js";
import type { ExtentEntry, Layer } from "./layer.js";
import { BLOCK_SIZE_BYTES } from "./layout.js";
import type { PoolCore } from "./pool-core.js";
import type { ChainView } from "./volume.js";

// The read path: a request resolves each block through the chain of layers,
// newest first, and reads each run of blocks from one place with one pread.

/** Scratch for the per-extent entries of a chain; only used synchronously. */
const chainEntries: Array<ExtentEntry | undefined> = [];

class ReadPart {
  readonly completion: Completion;
  readonly pool: PoolCore;
  readonly buf: Buffer;
  readonly at: number;
  readonly length: number;
  readonly position: number;
  /** Bytes read so far: a read may return fewer than asked (io_uring does, near a signal), and the rest is asked again. */
  done = 0;
  readonly onRead: (error: NodeJS.ErrnoException | null, bytesRead: number) => void;

  constructor(completion: Completion, pool: PoolCore, buf: Buffer, at: number, length: number, position: number) {
    this.completion = completion;
    this.pool = pool;
    this.buf = buf;
    this.at = at;
    this.length = length;
    this.position = position;
    this.onRead = (error, bytesRead) => {
      if (error) return this.completion.done(ioError(error, "pool read"));
      this.done += bytesRead;
      if (this.done === this.length) return this.completion.done(null);
      if (bytesRead > 0) return this.start();
      this.completion.done(new KeelsonError({ code: "INTERNAL", message: "short read from the pool (past its end)" }));
    };
  }

  start(): void {
    const { done } = this;
    this.pool.device.io.read(
      this.pool.device.dataFd,
      this.buf,
      this.at + done,
      this.length - done,
      this.position + done,
      this.onRead,
    );
  }
}

/**
 * The physical block holding block `block` of the extent for the chain in `chainEntries`
 * (newest first), or -1 for zeros: in a whole extent, or through a block map.
 */
function resolveBlock(depth: number, block: number, blocksPerExtent: number): number {
  for (let i = 0; i < depth; i++) {
    const e = chainEntries[i];
    if (e === undefined) continue;
    const s = getState(e.states, block);
    if (s === BlockState.DATA) return e.blocks ? (e.blocks[block] as number) : e.phys * blocksPerExtent + block;
    if (s === BlockState.ZERO) return -1;
  }
  return -1;
}

/** Reads `length` bytes at pool data byte `dataByte` (-1: zeros) into buf at `at`. */
function emitRead(pool: PoolCore, c: Completion, dataByte: number, length: number, buf: Buffer, at: number): void {
  if (dataByte < 0) {
    buf.fill(0, at, at + length);
    return;
  }
  c.pending++;
  new ReadPart(c, pool, buf, at, length, pool.layout.dataOffset + dataByte).start();
}

/**
 * Reads bytes [from, to) of one extent into buf at `at`, one pool read per run of blocks that
 * are consecutive on disk too (or all zeros).
 */
function readSegment(
  pool: PoolCore,
  volume: ChainView,
  logical: number,
  from: number,
  to: number,
  buf: Buffer,
  at: number,
  c: Completion,
): void {
  const chain = volume.chain;
  for (let i = 0; i < chain.length; i++) chainEntries[i] = (chain[i] as Layer).extents.get(logical);
  const firstBlock = Math.floor(from / BLOCK_SIZE_BYTES);
  const lastBlock = Math.floor((to - 1) / BLOCK_SIZE_BYTES);
  const top = chainEntries[0];
  if (
    chain.length === 1 &&
    top !== undefined &&
    top.phys >= 0 &&
    allStates(top.states, firstBlock, lastBlock + 1, BlockState.DATA)
  ) {
    emitRead(pool, c, top.phys * pool.layout.extentSizeBytes + from, to - from, buf, at);
    return;
  }
  const perExtent = pool.layout.extentSizeBytes / BLOCK_SIZE_BYTES;
  // A run: bytes [runFrom, boundary) whose first block is runBlock, held from physical block runSrc on.
  let runFrom = from;
  let runBlock = firstBlock;
  let runSrc = resolveBlock(chain.length, firstBlock, perExtent);
  const flush = (boundary: number): void => {
    const dataByte = runSrc < 0 ? -1 : runSrc * BLOCK_SIZE_BYTES + (runFrom - runBlock * BLOCK_SIZE_BYTES);
    emitRead(pool, c, dataByte, boundary - runFrom, buf, at + (runFrom - from));
  };
  for (let b = firstBlock + 1; b <= lastBlock; b++) {
    const src = resolveBlock(chain.length, b, perExtent);
    if (runSrc < 0 ? src < 0 : src === runSrc + (b - runBlock)) continue;
    const boundary = b * BLOCK_SIZE_BYTES;
    flush(boundary);
    runFrom = boundary;
    runBlock = b;
    runSrc = src;
  }
  flush(to);
}

/** Reads `length` bytes at `offset` of the volume into `buf` at `bufOffset`. Any alignment. */
export function readCore(
  pool: PoolCore,
  volume: ChainView,
  offset: number,
  length: number,
  buf: Buffer,
  bufOffset: number,
  cb: IoCallback,
): void {
  const bad = checkRange(volume, offset, length) ?? pool.failure;
  if (bad) return cb(bad);
  assert(bufOffset + length <= buf.length, "read buffer too small");
  const c = new Completion(cb);
  c.tracked = pool.reads;
  c.era = pool.reads.begin();
  const extentBytes = pool.layout.extentSizeBytes;
  for (let pos = offset; pos < offset + length; ) {
    const logical = Math.floor(pos / extentBytes);
    const base = logical * extentBytes;
    const end = Math.min(offset + length, base + extentBytes);
    readSegment(pool, volume, logical, pos - base, end - base, buf, bufOffset + (pos - offset), c);
    pos = end;
  }
  c.done(null);
}
