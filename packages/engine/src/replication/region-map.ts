/** Unit of dirty tracking and of rebuild copies. */
export const REGION_BYTES = 1024 * 1024;

/** The regions `[offset, offset + length)` touches. */
export function regionsOf(offset: number, length: number, regionBytes = REGION_BYTES): { first: number; last: number } {
  const first = Math.floor(offset / regionBytes);
  const last = Math.floor((offset + Math.max(length, 1) - 1) / regionBytes);
  return { first, last };
}

/**
 * Regions of a volume a replica may not hold (written while it was out, or
 * not yet flushed on it when it failed): one bit per region, so a 1 TiB
 * volume costs 128 KiB however much is dirty.
 */
export class RegionMap {
  readonly regions: number;
  readonly #bits: Uint8Array;
  #count = 0;

  constructor(
    sizeBytes: number,
    readonly regionBytes = REGION_BYTES,
  ) {
    this.regions = Math.ceil(sizeBytes / regionBytes);
    this.#bits = new Uint8Array(Math.ceil(this.regions / 8));
  }

  /**
   * A map marking the same regions as `other`, covering at least `sizeBytes`
   * (a volume grown since `other` was made: regions past its old end must
   * be markable, or writes there would be missed by a rebuild).
   */
  static copy(other: RegionMap, sizeBytes = 0): RegionMap {
    const m = new RegionMap(Math.max(other.regions * other.regionBytes, sizeBytes), other.regionBytes);
    m.#bits.set(other.#bits);
    m.#count = other.#count;
    return m;
  }

  /** The bitmap itself (bit `r & 7` of byte `r >> 3` is region r). */
  toBytes(): Uint8Array {
    return this.#bits.slice();
  }

  /** Regions marked. */
  get count(): number {
    return this.#count;
  }

  add(region: number): void {
    if (region < 0 || region >= this.regions) return;
    const byte = region >> 3;
    const bit = 1 << (region & 7);
    if ((this.#bits[byte] as number) & bit) return;
    this.#bits[byte] = (this.#bits[byte] as number) | bit;
    this.#count++;
  }

  addRange(offset: number, length: number): void {
    const { first, last } = regionsOf(offset, length, this.regionBytes);
    for (let r = first; r <= last; r++) this.add(r);
  }

  has(region: number): boolean {
    return ((this.#bits[region >> 3] as number) & (1 << (region & 7))) !== 0;
  }

  /** Marked regions in ascending order. */
  *[Symbol.iterator](): IterableIterator<number> {
    for (let r = 0; r < this.regions; r++) if (this.has(r)) yield r;
  }
}
