import { TokenBucket } from "../qos/token-bucket.js";

/** Clock and sleep, injectable so the throttle can be tested without waiting. */
export interface ThrottleClock {
  now(): number;
  sleep(ms: number): Promise<void>;
}

const realClock: ThrottleClock = {
  now: () => performance.now(),
  sleep: (ms) => new Promise((r) => setTimeout(r, ms)),
};

/**
 * Caps the bytes a node's rebuilds copy per second, all volumes together, so
 * a rebuild cannot take the disk and the network from the applications. A
 * copy larger than what is saved up still goes (the bucket runs into debt),
 * and the next waits until the debt is paid: the average holds.
 */
export class RebuildThrottle {
  readonly #bucket: TokenBucket | null;
  readonly #clock: ThrottleClock;
  /** Copies waiting, so they go in the order they asked. */
  #queue: Promise<void> = Promise.resolve();

  /** `bytesPerSec` 0 means no limit. Burst: a quarter of a second's worth. */
  constructor(bytesPerSec: number, clock: ThrottleClock = realClock) {
    this.#clock = clock;
    this.#bucket = bytesPerSec > 0 ? new TokenBucket(bytesPerSec, bytesPerSec / 4, clock.now()) : null;
  }

  get bytesPerSec(): number {
    return this.#bucket?.rate ?? 0;
  }

  /** Resolves when `bytes` may be copied. */
  take(bytes: number): Promise<void> {
    const bucket = this.#bucket;
    if (!bucket) return Promise.resolve();
    const turn = this.#queue.then(async () => {
      for (let wait = bucket.waitMs(this.#clock.now()); wait > 0; wait = bucket.waitMs(this.#clock.now())) {
        await this.#clock.sleep(wait);
      }
      bucket.take(bytes);
    });
    this.#queue = turn;
    return turn;
  }
}

/** No limit: for frontends outside an engine (tests) and engines without one. */
export const UNTHROTTLED = new RebuildThrottle(0);
