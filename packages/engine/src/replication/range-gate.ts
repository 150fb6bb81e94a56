interface Span {
  offset: number;
  end: number;
}

interface Lock extends Span {
  released: Promise<void>;
}

function overlaps(a: Span, b: Span): boolean {
  return a.offset < b.end && b.offset < a.end;
}

/**
 * Keeps a rebuild's copy of a region and the application's writes to it
 * apart. The copy reads a region from a healthy replica and writes it to the
 * one being rebuilt; a write to that region landing on both between the read
 * and the copy's write would be overwritten by older data on the new
 * replica. So a locked region waits for the writes already in it and holds
 * new ones back until the copy is done. Writes elsewhere are not delayed.
 */
export class RangeGate {
  readonly #inflight = new Map<number, Span>();
  readonly #locks = new Set<Lock>();
  /** Copies waiting for in-flight writes to leave their region. */
  readonly #drains = new Set<{ span: Span; done: () => void }>();
  #next = 1;

  /** Writes in flight now. */
  get inflight(): number {
    return this.#inflight.size;
  }

  /**
   * Enters a write of `[offset, offset + length)`; returns its leave
   * function, at once when no locked region overlaps (the usual case).
   */
  enter(offset: number, length: number): (() => void) | Promise<() => void> {
    const span = { offset, end: offset + Math.max(length, 1) };
    const blocking = this.#blocking(span);
    if (!blocking) return this.#admit(span);
    return this.#enterAfter(span, blocking);
  }

  async #enterAfter(span: Span, first: Lock): Promise<() => void> {
    let blocking: Lock | undefined = first;
    while (blocking) {
      await blocking.released;
      blocking = this.#blocking(span);
    }
    return this.#admit(span);
  }

  #blocking(span: Span): Lock | undefined {
    if (this.#locks.size === 0) return undefined;
    for (const l of this.#locks) if (overlaps(l, span)) return l;
    return undefined;
  }

  #admit(span: Span): () => void {
    const id = this.#next++;
    this.#inflight.set(id, span);
    return () => {
      this.#inflight.delete(id);
      if (this.#drains.size === 0) return;
      for (const d of this.#drains) if (!this.#busy(d.span)) d.done();
    };
  }

  #busy(span: Span): boolean {
    for (const s of this.#inflight.values()) if (overlaps(s, span)) return true;
    return false;
  }

  /**
   * Locks `[offset, offset + length)` for a copy: new writes to it wait, and
   * this resolves once the writes already in it are done. Returns the unlock.
   */
  async lock(offset: number, length: number): Promise<() => void> {
    const span = { offset, end: offset + length };
    // Another copy of an overlapping region goes first.
    for (let l = this.#blocking(span); l; l = this.#blocking(span)) await l.released;
    let release = (): void => undefined;
    const lock: Lock = { ...span, released: new Promise<void>((r) => (release = r)) };
    this.#locks.add(lock);
    if (this.#busy(span)) {
      await new Promise<void>((done) => {
        const drain = {
          span,
          done: () => {
            this.#drains.delete(drain);
            done();
          },
        };
        this.#drains.add(drain);
      });
    }
    return () => {
      this.#locks.delete(lock);
      release();
    };
  }
}
