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
 * Largest request that counts as small: a 1 MiB read's reply with its header.
 * Small requests keep a slice of the budget that large ones cannot fill, so a
 * few clients that take 32 MiB buffers and stop reading their replies cannot
 * starve every other client of the 4 KiB to 1 MiB requests it lives on.
 */
export const SMALL_REQUEST_BYTES = 1024 * 1024 + 64;

/** How a budget is split. */
export interface ByteBudgetOptions {
  /** Bytes only small requests may use (default: an eighth of the limit); 0 makes the budget one plain FIFO. */
  smallReserveBytes?: number;
}

/**
 * A byte budget with back-pressure: buffers are allocated only once their
 * bytes are taken from it, and a holder that does not fit waits. Waiters are
 * served in FIFO order within two classes: small requests (up to
 * {@link SMALL_REQUEST_BYTES}, or the reserve if smaller) and large ones.
 * Large requests never use the small reserve. While a large request waits,
 * small ones run only within the reserve, so that releases gather for the
 * large one (it is not starved by a stream of small ones); while none waits,
 * small ones may use the whole budget. A request larger than the whole
 * budget still runs, alone, once nothing else is held: the bound is then that
 * one request, which the protocol's maximum request size caps.
 */
export class ByteBudget {
  /** Bytes that may be held at once. */
  readonly limitBytes: number;
  /** Most one holder (a connection) should hold, so that one client cannot take the whole budget from the others. */
  readonly shareBytes: number;
  /** Bytes only small requests may hold. */
  readonly smallReserveBytes: number;
  /** Bytes held now, and the part of them small requests hold. */
  #usedBytes = 0;
  #usedSmallBytes = 0;
  /** Holders waiting, oldest first, per class. */
  readonly #small: Waiting[] = [];
  readonly #large: Waiting[] = [];

  constructor(limitBytes: number = DEFAULT_NBD_BUFFER_BYTES, options: ByteBudgetOptions = {}) {
    assert(Number.isSafeInteger(limitBytes) && limitBytes > 0, `budget of ${limitBytes} bytes`);
    const reserve = options.smallReserveBytes ?? Math.floor(limitBytes / 8);
    assert(Number.isSafeInteger(reserve) && reserve >= 0 && reserve < limitBytes, `small reserve of ${reserve} bytes`);
    this.limitBytes = limitBytes;
    this.shareBytes = Math.ceil(limitBytes / 4);
    this.smallReserveBytes = reserve;
  }

  get usedBytes(): number {
    return this.#usedBytes;
  }

  /** Holders waiting now. */
  get waiters(): number {
    return this.#small.length + this.#large.length;
  }

  /**
   * Takes `bytes` when they fit now and nobody of its class waits before;
   * otherwise queues `waiter` (whose `onBudget` runs once the bytes were
   * taken for it) and returns false. A waiter waits for one request at a time.
   */
  acquire(bytes: number, waiter: BudgetWaiter): boolean {
    assert(bytes > 0, "acquire of no bytes");
    const small = this.#isSmall(bytes);
    const queue = small ? this.#small : this.#large;
    if (queue.length === 0 && (small ? this.#fitsSmall(bytes) : this.#fitsLarge(bytes))) {
      this.#take(bytes, small);
      return true;
    }
    assert(this.waiters < MAX_BUDGET_WAITERS, "too many budget waiters");
    queue.push({ waiter, bytes });
    return false;
  }

  /** Returns bytes taken by `acquire` (or granted to a waiter), and grants what now fits to the waiters in order. */
  release(bytes: number): void {
    // A static message: this runs once per request, and a template would be built on every call.
    assert(bytes >= 0 && bytes <= this.#usedBytes, "release of more bytes than are held");
    this.#usedBytes -= bytes;
    if (bytes > 0 && this.#isSmall(bytes)) this.#usedSmallBytes -= bytes;
    assert(this.#usedSmallBytes >= 0 && this.#usedSmallBytes <= this.#usedBytes, "released bytes match no acquire");
    this.#grant();
  }

  /** Withdraws a waiter (its connection closed); nothing happens when it does not wait. */
  cancel(waiter: BudgetWaiter): void {
    for (const queue of [this.#small, this.#large]) {
      const at = queue.findIndex((w) => w.waiter === waiter);
      if (at < 0) continue;
      queue.splice(at, 1);
      // The head may have blocked others behind it.
      if (at === 0) this.#grant();
      return;
    }
  }

  /** Grants the heads of both queues while they fit: the large one first, as small ones may have held back for it. */
  #grant(): void {
    for (let progress = true; progress; ) {
      progress = false;
      const large = this.#large[0];
      if (large && this.#fitsLarge(large.bytes)) {
        this.#large.shift();
        this.#take(large.bytes, false);
        large.waiter.onBudget();
        progress = true;
      }
      const small = this.#small[0];
      if (small && this.#fitsSmall(small.bytes)) {
        this.#small.shift();
        this.#take(small.bytes, true);
        small.waiter.onBudget();
        progress = true;
      }
    }
  }

  #take(bytes: number, small: boolean): void {
    this.#usedBytes += bytes;
    if (small) this.#usedSmallBytes += bytes;
  }

  #isSmall(bytes: number): boolean {
    return bytes <= Math.min(SMALL_REQUEST_BYTES, this.smallReserveBytes);
  }

  /** A large request stays out of the small reserve; alone it always fits. */
  #fitsLarge(bytes: number): boolean {
    if (this.#usedBytes === 0) return true;
    const largeHeld = this.#usedBytes - this.#usedSmallBytes;
    return this.#usedBytes + bytes <= this.limitBytes && largeHeld + bytes <= this.limitBytes - this.smallReserveBytes;
  }

  /**
   * A small request uses the whole budget, but only its reserve while a large
   * one waits, and nothing while the one waiting can only run alone (larger
   * than the part of the budget large requests may use): it waits for the
   * budget to empty, which a stream of small requests would never let happen.
   */
  #fitsSmall(bytes: number): boolean {
    if (this.#usedBytes === 0) return true;
    if (this.#usedBytes + bytes > this.limitBytes) return false;
    const large = this.#large[0];
    if (large === undefined) return true;
    if (large.bytes > this.limitBytes - this.smallReserveBytes) return false;
    return this.#usedSmallBytes + bytes <= this.smallReserveBytes;
  }
}
