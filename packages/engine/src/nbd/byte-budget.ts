import assert from "node:assert";

/** Default bytes of NBD request payloads and reply buffers a daemon holds at once (all connections together). */
export const DEFAULT_NBD_BUFFER_BYTES = 256 * 1024 * 1024;
/** Most holders waiting at once; each NBD connection waits for at most one request, and a server accepts far fewer connections. */
export const MAX_BUDGET_WAITERS = 16_384;

/** Told when bytes it waited for were taken for it. */
export interface BudgetWaiter {
  /** The bytes asked for are now held on the waiter's behalf; it must release them. */
  onBudget(): void;
}

interface Waiting {
  waiter: BudgetWaiter;
  bytes: number;
}

/**
 * A byte budget with back-pressure: buffers are allocated only once their
 * bytes are taken from it, and a holder that does not fit waits in FIFO order
 * (so a large request is not starved by a stream of small ones). A request
 * larger than the whole budget still runs, alone, once nothing else is held:
 * the bound is then that one request, which the protocol's maximum request
 * size caps.
 */
export class ByteBudget {
  /** Bytes that may be held at once. */
  readonly limitBytes: number;
  /** Most one holder (a connection) should hold, so that one client cannot take the whole budget from the others. */
  readonly shareBytes: number;
  /** Bytes held now. */
  #usedBytes = 0;
  /** Holders waiting, oldest first. */
  readonly #waiting: Waiting[] = [];

  constructor(limitBytes: number = DEFAULT_NBD_BUFFER_BYTES) {
    assert(Number.isSafeInteger(limitBytes) && limitBytes > 0, `budget of ${limitBytes} bytes`);
    this.limitBytes = limitBytes;
    this.shareBytes = Math.ceil(limitBytes / 4);
  }

  get usedBytes(): number {
    return this.#usedBytes;
  }

  /** Holders waiting now. */
  get waiters(): number {
    return this.#waiting.length;
  }

  /**
   * Takes `bytes` when they fit now and nobody waits before; otherwise queues
   * `waiter` (whose `onBudget` runs once the bytes were taken for it) and
   * returns false. A waiter waits for one request at a time.
   */
  acquire(bytes: number, waiter: BudgetWaiter): boolean {
    assert(bytes > 0, "acquire of no bytes");
    if (this.#waiting.length === 0 && this.#fits(bytes)) {
      this.#usedBytes += bytes;
      return true;
    }
    assert(this.#waiting.length < MAX_BUDGET_WAITERS, "too many budget waiters");
    this.#waiting.push({ waiter, bytes });
    return false;
  }

  /** Returns bytes taken by `acquire` (or granted to a waiter), and grants what now fits to the waiters in order. */
  release(bytes: number): void {
    // A static message: this runs once per request, and a template would be built on every call.
    assert(bytes >= 0 && bytes <= this.#usedBytes, "release of more bytes than are held");
    this.#usedBytes -= bytes;
    while (this.#waiting.length > 0) {
      const head = this.#waiting[0] as Waiting;
      if (!this.#fits(head.bytes)) return;
      this.#waiting.shift();
      this.#usedBytes += head.bytes;
      head.waiter.onBudget();
    }
  }

  /** Withdraws a waiter (its connection closed); nothing happens when it does not wait. */
  cancel(waiter: BudgetWaiter): void {
    const at = this.#waiting.findIndex((w) => w.waiter === waiter);
    if (at < 0) return;
    this.#waiting.splice(at, 1);
    // The head may have blocked others behind it.
    if (at === 0) this.release(0);
  }

  #fits(bytes: number): boolean {
    return this.#usedBytes + bytes <= this.limitBytes || this.#usedBytes === 0;
  }
}
