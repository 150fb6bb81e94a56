/**
 * Orders ordinary writes against read-modify-write cycles on one volume.
 * Aligned writes share the gate; a sub-block write takes it exclusively, so
 * its read and its write-back see no other write to the same block between.
 * Sub-block writes are rare (clients align to the advertised 4 KiB), so the
 * exclusive path may be slow; the shared path costs two counter updates.
 */
export class WriteGate {
  /** Shared holders running now. */
  #shared = 0;
  /** True while an exclusive holder runs. */
  #exclusive = false;
  /** Waiters in arrival order; `exclusive` tells which kind each is. */
  readonly #waiting: Array<{ exclusive: boolean; run: () => void }> = [];

  /**
   * Runs `run` as a shared holder: at once when no exclusive holder runs or
   * waits, else after them, in arrival order. `run` must call `leaveShared`.
   */
  runShared(run: () => void): void {
    if (this.#exclusive || this.#waiting.length > 0) {
      this.#waiting.push({ exclusive: false, run });
      return;
    }
    this.#shared++;
    run();
  }

  leaveShared(): void {
    this.#shared--;
    this.#drain();
  }

  /** Runs `run` once no other holder of either kind is inside. */
  enterExclusive(run: () => void): void {
    this.#waiting.push({ exclusive: true, run });
    this.#drain();
  }

  leaveExclusive(): void {
    this.#exclusive = false;
    this.#drain();
  }

  #drain(): void {
    while (!this.#exclusive && this.#waiting.length > 0) {
      const next = this.#waiting[0] as { exclusive: boolean; run: () => void };
      if (next.exclusive) {
        if (this.#shared > 0) return;
        this.#waiting.shift();
        this.#exclusive = true;
        next.run();
        return;
      }
      this.#waiting.shift();
      this.#shared++;
      next.run();
    }
  }
}
