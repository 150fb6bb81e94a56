import assert from "node:assert";
import type { ExtentAllocator } from "./extent-allocator.js";

// Sub-extent allocation (issue 16): physical space in 4 KiB blocks, carved out
// of whole extents ("slabs"), so a scattered 4 KiB write takes 4 KiB of pool
// rather than a 1 MiB extent. A physical block number is
// `extent * blocksPerExtent + index`. Whole extents still come from the
// ExtentAllocator (a write covering a whole extent takes one); a slab is an
// extent taken from it and handed out block by block, and goes back to it once
// every block is free again.

/** A run of consecutive physical blocks handed out by {@link BlockAllocator.allocate}. */
export interface BlockRun {
  first: number;
  length: number;
}

/** How many other slabs an allocation looks through for a long enough run before it opens a new one. */
const SLAB_PROBES = 8;

/**
 * Hands out physical blocks. Like extents, a freed block is quarantined until
 * the next metadata commit is durable: reusing it earlier could let another
 * volume's new data show through an old mapping that a crash brings back.
 */
export class BlockAllocator {
  readonly #extents: ExtentAllocator;
  readonly blocksPerExtent: number;
  /** Slab extent to one byte per block: 1 when the block is allocated or quarantined. */
  readonly #slabs = new Map<number, Uint8Array>();
  /** Slabs with free blocks, and how many each has. */
  readonly #open = new Map<number, number>();
  /** Free blocks in all slabs (whole free extents not counted). */
  #freeBlocks = 0;
  #quarantine: number[] = [];
  /** Blocks of quarantines handed to commits still running. */
  #reclaiming = 0;
  /** The slab the last allocation came from, tried first by the next. */
  #cursor = -1;

  /**
   * `inUse`: blocks mapped by the pool's metadata at open. Their extents must
   * be in use in `extents` already (see {@link slabExtentsOf}).
   */
  constructor(extents: ExtentAllocator, blocksPerExtent: number, inUse: Iterable<number>) {
    assert(Number.isInteger(blocksPerExtent) && blocksPerExtent >= 1, "an extent holds whole blocks");
    this.#extents = extents;
    this.blocksPerExtent = blocksPerExtent;
    for (const block of inUse) {
      const used = this.#slabOf(Math.floor(block / blocksPerExtent));
      const i = block % blocksPerExtent;
      assert(used[i] === 0, `block ${block} mapped twice`);
      used[i] = 1;
    }
    for (const [slab, used] of this.#slabs) {
      const free = used.reduce((n, u) => n + (u === 0 ? 1 : 0), 0);
      this.#freeBlocks += free;
      if (free > 0) this.#open.set(slab, free);
    }
  }

  /** Free blocks inside slabs; with the extent allocator's free extents, all the space a write can take. */
  get freeBlocks(): number {
    return this.#freeBlocks;
  }

  /** Blocks allocatable now: those free in slabs and those of every free extent. */
  get allocatableBlocks(): number {
    return this.#freeBlocks + this.#extents.freeCount * this.blocksPerExtent;
  }

  get quarantinedCount(): number {
    return this.#quarantine.length;
  }

  /** Blocks freed but not yet allocatable: quarantined, or in a commit under way. */
  get awaitingCommitCount(): number {
    return this.#quarantine.length + this.#reclaiming;
  }

  get slabCount(): number {
    return this.#slabs.size;
  }

  /** True when `block` lies in a slab and is allocated or quarantined. */
  inUse(block: number): boolean {
    return this.#slabs.get(Math.floor(block / this.blocksPerExtent))?.[block % this.blocksPerExtent] === 1;
  }

  /**
   * Up to `count` consecutive free blocks: at `hint` when it is free (the block
   * after the last one a volume wrote, so its sequential writes stay
   * sequential on disk), else the first run long enough in a slab with free
   * blocks, else a new slab, else the longest run found. Fewer than `count`
   * when no run is that long (the caller asks again for the rest); null when
   * nothing is free.
   */
  allocate(count: number, hint = -1): BlockRun | null {
    assert(Number.isInteger(count) && count >= 1 && count <= this.blocksPerExtent, "a run fits one extent");
    if (hint >= 0) {
      const slab = Math.floor(hint / this.blocksPerExtent);
      const used = this.#slabs.get(slab);
      const at = hint % this.blocksPerExtent;
      if (used !== undefined && used[at] === 0) return this.#take(slab, used, at, this.#freeRunAt(used, at, count));
    }
    let best: { slab: number; at: number; length: number } | null = null;
    const probe = (slab: number): BlockRun | null => {
      const used = this.#slabs.get(slab) as Uint8Array;
      const run = this.#longestRun(used, count);
      if (run.length >= count) return this.#take(slab, used, run.at, count);
      if (run.length > 0 && (best === null || run.length > best.length)) best = { slab, ...run };
      return null;
    };
    if (this.#open.has(this.#cursor)) {
      const run = probe(this.#cursor);
      if (run) return run;
    }
    let probes = 0;
    for (const slab of this.#open.keys()) {
      if (slab === this.#cursor) continue;
      const run = probe(slab);
      if (run) return run;
      if (++probes === SLAB_PROBES) break;
    }
    const fresh = this.#extents.allocate();
    if (fresh >= 0) {
      const used = this.#slabOf(fresh);
      this.#freeBlocks += this.blocksPerExtent;
      this.#open.set(fresh, this.blocksPerExtent);
      return this.#take(fresh, used, 0, count);
    }
    if (best === null) {
      // Every probed slab was full or the probes ran out: any slab with a free block will do.
      for (const slab of this.#open.keys()) {
        const run = probe(slab);
        if (run) return run;
        if (best !== null) break;
      }
    }
    if (best === null) return null;
    const { slab, at, length } = best;
    return this.#take(slab, this.#slabs.get(slab) as Uint8Array, at, length);
  }

  /** Frees a block; it becomes allocatable after the next durable commit. */
  release(block: number): void {
    assert(this.inUse(block), `block ${block} released while not in use`);
    this.#quarantine.push(block);
  }

  /**
   * Makes a whole extent in use (taken from the extent allocator) a slab with
   * every block in use, so its blocks can be owned and freed one by one.
   */
  carve(extent: number): void {
    assert(!this.#slabs.has(extent), `extent ${extent} is a slab already`);
    this.#slabs.set(extent, new Uint8Array(this.blocksPerExtent).fill(1));
  }

  /** Hands the quarantine to a commit that is starting. */
  takeQuarantine(): number[] {
    const taken = this.#quarantine;
    this.#quarantine = [];
    this.#reclaiming += taken.length;
    return taken;
  }

  /** Makes blocks from a durable commit's quarantine allocatable; a slab left empty goes back as a free extent. */
  reclaim(blocks: readonly number[]): void {
    this.#reclaiming -= blocks.length;
    assert(this.#reclaiming >= 0, "reclaimed more blocks than commits took");
    for (const block of blocks) {
      const slab = Math.floor(block / this.blocksPerExtent);
      const used = this.#slabs.get(slab) as Uint8Array;
      const i = block % this.blocksPerExtent;
      assert(used?.[i] === 1, `block ${block} reclaimed while not in use`);
      used[i] = 0;
      this.#freeBlocks++;
      const free = (this.#open.get(slab) ?? 0) + 1;
      if (free < this.blocksPerExtent) {
        this.#open.set(slab, free);
        continue;
      }
      this.#slabs.delete(slab);
      this.#open.delete(slab);
      this.#freeBlocks -= this.blocksPerExtent;
      this.#extents.freeNow(slab);
    }
  }

  /** Puts back a quarantine whose commit failed. */
  requarantine(blocks: readonly number[]): void {
    this.#reclaiming -= blocks.length;
    assert(this.#reclaiming >= 0, "requarantined more blocks than commits took");
    // A loop, not a spread: a quarantine may hold more blocks than a call takes arguments.
    for (const block of blocks) this.#quarantine.push(block);
  }

  #slabOf(extent: number): Uint8Array {
    let used = this.#slabs.get(extent);
    if (used === undefined) {
      used = new Uint8Array(this.blocksPerExtent);
      this.#slabs.set(extent, used);
    }
    return used;
  }

  /** Length of the free run at `at`, at most `count`. */
  #freeRunAt(used: Uint8Array, at: number, count: number): number {
    let n = 0;
    while (n < count && at + n < used.length && used[at + n] === 0) n++;
    return n;
  }

  /** The first free run of at least `count` blocks, else the longest one (length 0: none free). */
  #longestRun(used: Uint8Array, count: number): { at: number; length: number } {
    let bestAt = 0;
    let bestLength = 0;
    for (let i = 0; i < used.length; ) {
      if (used[i] !== 0) {
        i++;
        continue;
      }
      const length = this.#freeRunAt(used, i, used.length - i);
      if (length >= count) return { at: i, length };
      if (length > bestLength) {
        bestAt = i;
        bestLength = length;
      }
      i += length;
    }
    return { at: bestAt, length: bestLength };
  }

  #take(slab: number, used: Uint8Array, at: number, length: number): BlockRun {
    assert(length >= 1, "a run holds a block");
    for (let i = at; i < at + length; i++) {
      assert(used[i] === 0, "an allocated block was free");
      used[i] = 1;
    }
    this.#freeBlocks -= length;
    const free = (this.#open.get(slab) as number) - length;
    if (free === 0) this.#open.delete(slab);
    else this.#open.set(slab, free);
    this.#cursor = slab;
    return { first: slab * this.blocksPerExtent + at, length };
  }
}

/** The extents holding any of `blocks`: slabs, in use in the extent allocator. */
export function slabExtentsOf(blocks: Iterable<number>, blocksPerExtent: number): Set<number> {
  const extents = new Set<number>();
  for (const block of blocks) extents.add(Math.floor(block / blocksPerExtent));
  return extents;
}
