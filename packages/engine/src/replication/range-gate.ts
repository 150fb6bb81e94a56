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

/** A write that entered the gate: waiting for the writes before it, or in flight. */
interface Entry extends Span {
  /** Resolves when it has left (its replicas all answered). */
  left: Promise<void>;
}

/**
 * Orders the writes of a replicated volume where they overlap, and keeps a
 * rebuild's copies apart from them.
 *
 * Overlapping writes: two writes in flight to overlapping ranges could be
 * applied in a different order by each replica, and every replica would still
 * count as in sync while holding different data. So a write that overlaps one
 * entered before it waits until that one has left (answered by every
 * replica): overlapping writes reach every replica in arrival order, one at a
 * time. Writes that do not overlap run concurrently, as before.
 *
 * Copies: a rebuild reads a region from a healthy replica and writes it to the
 * one being rebuilt; a write to that region landing on both between the read
 * and the copy's write would be overwritten by older data on the new replica.
 * So a locked region waits for the writes already in it and holds new ones
 * back until the copy is done.
 */
export class RangeGate {
  /** Writes sent to the replicas and not yet answered, by id. */
  readonly #inflight = new Map<number, Span>();
  /** Every write that entered and has not left (waiting or in flight), by id in arrival order. */
  readonly #entries = new Map<number, Entry>();
  readonly #locks = new Set<Lock>();
  /** Copies waiting for in-flight writes to leave their region. */
  readonly #drains = new Set<{ span: Span; done: () => void }>();
  #next = 1;

  /** Writes in flight now. */
  get inflight(): number {
    return this.#inflight.size;
  }

  /** Writes entered and not yet left (in flight or waiting their turn). */
  get entered(): number {
    return this.#entries.size;
  }

  /**
   * Enters a write of `[offset, offset + length)`; returns its leave
   * function, at once when no earlier write and no locked region overlaps
   * it (the usual case), else once they are gone.
   */
  enter(offset: number, length: number): (() => void) | Promise<() => void> {
    const span = { offset, end: offset + Math.max(length, 1) };
    const before = this.#overlappingEntries(span);
    const id = this.#next++;
    let left = (): void => undefined;
    this.#entries.set(id, { ...span, left: new Promise<void>((r) => (left = r)) });
    const leave = () => {
      this.#entries.delete(id);
      this.#inflight.delete(id);
      left();
      if (this.#drains.size === 0) return;
      for (const d of this.#drains) if (!this.#busy(d.span)) d.done();
    };
    const blocking = this.#blocking(span);
    if (before.length === 0 && !blocking) {
      this.#inflight.set(id, span);
      return leave;
    }
    return this.#enterAfter(id, span, before, leave);
  }

  async #enterAfter(id: number, span: Span, before: Promise<void>[], leave: () => void): Promise<() => void> {
    await Promise.all(before);
    for (let l = this.#blocking(span); l; l = this.#blocking(span)) await l.released;
    this.#inflight.set(id, span);
    return leave;
  }

  /** When each write entered before now that overlaps `span` leaves. */
  #overlappingEntries(span: Span): Promise<void>[] {
    const out: Promise<void>[] = [];
    if (this.#entries.size === 0) return out;
    for (const e of this.#entries.values()) if (overlaps(e, span)) out.push(e.left);
    return out;
  }

  #blocking(span: Span): Lock | undefined {
    if (this.#locks.size === 0) return undefined;
    for (const l of this.#locks) if (overlaps(l, span)) return l;
    return undefined;
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
