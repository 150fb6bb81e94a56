/** Bytes a rebuild copies to a replica between the flushes it starts while it copies. */
export const REBUILD_FLUSH_BYTES = 64 * 1024 * 1024;

/**
 * Keeps what a rebuild has copied to a replica and not yet flushed bounded.
 * Left to the end, a rebuild of a large volume leaves gigabytes dirty in the
 * replica node's page cache: the kernel then throttles every writer on that
 * node, applications included, and the final flush writes it all back while
 * the copy is over and the disk could have been busy all along. So a flush
 * starts every `intervalBytes` copied (one at a time, while the copy goes
 * on), and the copy waits for it when another interval is copied before it
 * ends: at most two intervals are unflushed, and the slower of the copy and
 * the disk sets the pace.
 */
export class RebuildWriteback {
  readonly #flush: () => Promise<void>;
  readonly #intervalBytes: number;
  /** Bytes copied since the last flush started. */
  #unflushed = 0;
  #inflight: Promise<void> | null = null;
  /** A flush that failed: the rebuild fails with it (what it copied is not known to be on the disk). */
  #failure: { error: unknown } | null = null;
  #flushes = 0;

  constructor(flush: () => Promise<void>, intervalBytes = REBUILD_FLUSH_BYTES) {
    if (!(intervalBytes > 0)) throw new RangeError(`flush interval must be positive, got ${intervalBytes}`);
    this.#flush = flush;
    this.#intervalBytes = intervalBytes;
  }

  /** Flushes started so far. */
  get flushes(): number {
    return this.#flushes;
  }

  /** Counts `bytes` copied; resolves when the copy may go on, rejects with a flush's failure. */
  async copied(bytes: number): Promise<void> {
    this.#unflushed += bytes;
    for (;;) {
      if (this.#failure) throw this.#failure.error;
      if (this.#unflushed < this.#intervalBytes) return;
      if (!this.#inflight) {
        this.#start();
        return;
      }
      await this.#inflight;
    }
  }

  /** Waits for the flush in flight; rejects with the failure of any flush started. */
  async settle(): Promise<void> {
    if (this.#inflight) await this.#inflight;
    if (this.#failure) throw this.#failure.error;
  }

  #start(): void {
    this.#unflushed = 0;
    this.#flushes++;
    this.#inflight = this.#flush().then(
      () => {
        this.#inflight = null;
      },
      (error: unknown) => {
        this.#failure ??= { error };
        this.#inflight = null;
      },
    );
  }
}
