import assert from "node:assert";

/**
 * Hands out physical extents. A freed extent is quarantined until the next
 * metadata commit is durable: reusing it earlier could let another volume's
 * new data show through an old mapping that a crash brings back.
 */
export class ExtentAllocator {
  /** Stack of free extent indexes; `top` entries are valid. */
  readonly #free: Int32Array;
  #top = 0;
  /** Extents freed since the last commit began. */
  #quarantine: number[] = [];
  /** Extents of quarantines handed to commits still running: free once they are durable. */
  #reclaiming = 0;
  /** Which extents are in use (allocated or quarantined), for assertions. */
  readonly #used: Uint8Array;

  constructor(extentCount: number, inUse: Iterable<number>) {
    this.#free = new Int32Array(extentCount);
    this.#used = new Uint8Array(extentCount);
    for (const phys of inUse) {
      assert(phys >= 0 && phys < extentCount && this.#used[phys] === 0, `extent ${phys} mapped twice or out of range`);
      this.#used[phys] = 1;
    }
    // Highest index first on the stack bottom, so allocation starts at extent 0.
    for (let phys = extentCount - 1; phys >= 0; phys--) if (this.#used[phys] === 0) this.#free[this.#top++] = phys;
  }

  get freeCount(): number {
    return this.#top;
  }

  get quarantinedCount(): number {
    return this.#quarantine.length;
  }

  /** Extents freed but not yet allocatable: quarantined, or in a commit under way. A commit makes them free. */
  get awaitingCommitCount(): number {
    return this.#quarantine.length + this.#reclaiming;
  }

  /** Takes one free extent, or -1 when none is left. */
  allocate(): number {
    if (this.#top === 0) return -1;
    const phys = this.#free[--this.#top] as number;
    this.#used[phys] = 1;
    return phys;
  }

  /** Frees an extent; it becomes allocatable after the next durable commit. */
  release(phys: number): void {
    assert(this.#used[phys] === 1, `extent ${phys} released while not in use`);
    this.#quarantine.push(phys);
  }

  /** Hands the quarantine to a commit that is starting. */
  takeQuarantine(): number[] {
    const taken = this.#quarantine;
    this.#quarantine = [];
    this.#reclaiming += taken.length;
    return taken;
  }

  /** Makes extents from a durable commit's quarantine allocatable. */
  reclaim(extents: readonly number[]): void {
    this.#reclaiming -= extents.length;
    assert(this.#reclaiming >= 0, "reclaimed more extents than commits took");
    for (const phys of extents) {
      this.#used[phys] = 0;
      this.#free[this.#top++] = phys;
    }
  }

  /**
   * Frees an in-use extent at once, skipping quarantine: for an extent whose every
   * block went through a quarantine of its own (a slab of the block allocator that
   * emptied), so no durable mapping can point into it any more.
   */
  freeNow(phys: number): void {
    assert(this.#used[phys] === 1, `extent ${phys} freed while not in use`);
    this.#used[phys] = 0;
    this.#free[this.#top++] = phys;
  }

  /** Puts back a quarantine whose commit failed. */
  requarantine(extents: readonly number[]): void {
    this.#reclaiming -= extents.length;
    assert(this.#reclaiming >= 0, "requarantined more extents than commits took");
    this.#quarantine.push(...extents);
  }
}
