/**
 * Tracks reads in flight so a physical extent is reused only after every read
 * that could have resolved to it has finished. A read resolves its extents
 * synchronously and then waits for the pool; a fold or a trim may unmap the
 * extent meanwhile, and reusing it before that read lands would return
 * another volume's data.
 */
export class ReadTracker {
  /** Reads now begin in this era; `afterCurrentReads` closes it. */
  #era = 0;
  /** Era to reads in flight; insertion order is era order, so the first key is the oldest. */
  readonly #inFlight = new Map<number, number>();
  /** Callbacks waiting for every read of eras up to `era` to finish, oldest first. */
  readonly #waiting: Array<{ era: number; run: () => void }> = [];

  /** Marks a read as started; pass the result to `end`. */
  begin(): number {
    const era = this.#era;
    this.#inFlight.set(era, (this.#inFlight.get(era) ?? 0) + 1);
    return era;
  }

  end(era: number): void {
    const left = (this.#inFlight.get(era) ?? 1) - 1;
    if (left > 0) {
      this.#inFlight.set(era, left);
      return;
    }
    this.#inFlight.delete(era);
    this.#drain();
  }

  /** Runs `run` once every read that began before this call has finished (at once when none). */
  afterCurrentReads(run: () => void): void {
    this.#waiting.push({ era: this.#era++, run });
    this.#drain();
  }

  #drain(): void {
    while (this.#waiting.length > 0) {
      const next = this.#waiting[0] as { era: number; run: () => void };
      const oldest = this.#inFlight.keys().next();
      if (!oldest.done && oldest.value <= next.era) return;
      this.#waiting.shift();
      next.run();
    }
  }
}
