/** Debts smaller than this count as paid. */
const DEBT_EPSILON = 1e-6;

/**
 * A token bucket: `rate` tokens a second, at most `burst` saved up. A request
 * passes when the bucket is not in debt and takes all it needs, going into
 * debt if it needs more than there is, so a request larger than the bucket
 * still passes (at the bucket's rate on average) and is never starved.
 */
export class TokenBucket {
  /** Tokens a second. */
  #rate: number;
  /** Most tokens saved up. */
  #burst: number;
  /** Tokens now; negative while in debt. */
  #tokens: number;
  /** When `#tokens` was last brought up to date (ms, monotonic). */
  #atMs: number;

  constructor(rate: number, burst: number, nowMs: number) {
    this.#rate = rate;
    this.#burst = burst;
    this.#tokens = burst;
    this.#atMs = nowMs;
  }

  get rate(): number {
    return this.#rate;
  }

  get burst(): number {
    return this.#burst;
  }

  #refill(nowMs: number): void {
    if (nowMs <= this.#atMs) return;
    this.#tokens = Math.min(this.#burst, this.#tokens + ((nowMs - this.#atMs) * this.#rate) / 1000);
    this.#atMs = nowMs;
  }

  /** Milliseconds until a request may pass (0: now). */
  waitMs(nowMs: number): number {
    this.#refill(nowMs);
    // A debt left by floating-point rounding would ask for a wait too short for the clock to move.
    return this.#tokens >= -DEBT_EPSILON ? 0 : (-this.#tokens * 1000) / this.#rate;
  }

  /** Takes `n` tokens; call only when `waitMs` said 0. */
  take(n: number): void {
    this.#tokens -= n;
  }

  /** New rate and burst, live; saved-up tokens above the new burst are dropped, debt is kept. */
  reconfigure(rate: number, burst: number, nowMs: number): void {
    this.#refill(nowMs);
    this.#rate = rate;
    this.#burst = burst;
    this.#tokens = Math.min(this.#tokens, burst);
  }
}
