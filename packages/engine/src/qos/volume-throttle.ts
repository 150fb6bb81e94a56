import { burstOf, LIMIT_KEYS, type LimitKey, type QosLimits } from "./policy.js";
import { TokenBucket } from "./token-bucket.js";

/** An I/O waiting for QoS: its direction and size, and how to start it. */
export interface QueuedIo {
  readonly write: boolean;
  readonly bytes: number;
  /** Starts the I/O (the next stage: the disk scheduler, or the store). */
  start(): void;
}

/** Most I/Os one volume may have waiting on its limits (NBD connections bound theirs too). */
export const MAX_THROTTLED_IOS = 4096;

/** A clock in milliseconds (monotonic); injected so tests run on simulated time. */
export interface Clock {
  nowMs(): number;
  /** Calls `fn` after `ms`; returns a cancel function. */
  after(ms: number, fn: () => void): () => void;
}

export const realClock: Clock = {
  nowMs: () => performance.now(),
  after: (ms, fn) => {
    const t = setTimeout(fn, Math.max(0, Math.ceil(ms)));
    return () => clearTimeout(t);
  },
};

/** Which buckets an I/O draws from, and how much from each. */
function costs(io: QueuedIo): Array<[LimitKey, number]> {
  return io.write
    ? [
        ["writeIops", 1],
        ["totalIops", 1],
        ["writeBytesPerSec", io.bytes],
      ]
    : [
        ["readIops", 1],
        ["totalIops", 1],
        ["readBytesPerSec", io.bytes],
      ];
}

/**
 * Enforces one volume's limits: I/Os pass in arrival order, each once every
 * bucket it draws from is out of debt. While any waits, a timer wakes the
 * queue when the first bucket in the way refills.
 */
export class VolumeThrottle {
  readonly #clock: Clock;
  readonly #buckets = new Map<LimitKey, TokenBucket>();
  readonly #queue: QueuedIo[] = [];
  #cancelTimer: (() => void) | null = null;
  /** I/Os that had to wait. */
  delayedIos = 0;
  /** Milliseconds during which at least one I/O was waiting. */
  #throttledMs = 0;
  #waitingSinceMs = -1;

  constructor(limits: QosLimits, clock: Clock = realClock) {
    this.#clock = clock;
    this.reconfigure(limits);
  }

  /** True when no limit is set (the caller may skip the throttle). */
  get unlimited(): boolean {
    return this.#buckets.size === 0;
  }

  /** Time spent with I/O waiting on a limit, up to now. */
  get throttledMs(): number {
    const open = this.#waitingSinceMs >= 0 ? this.#clock.nowMs() - this.#waitingSinceMs : 0;
    return this.#throttledMs + open;
  }

  get queuedIos(): number {
    return this.#queue.length;
  }

  /** Applies new limits now; waiting I/Os are re-timed against them. */
  reconfigure(limits: QosLimits): void {
    const now = this.#clock.nowMs();
    for (const key of LIMIT_KEYS) {
      const limit = limits[key];
      const bucket = this.#buckets.get(key);
      if (!limit) this.#buckets.delete(key);
      else if (bucket) bucket.reconfigure(limit.rate, burstOf(limit), now);
      else this.#buckets.set(key, new TokenBucket(limit.rate, burstOf(limit), now));
    }
    this.#rearm();
  }

  /** Starts `io` now if its buckets allow and nothing waits before it; queues it otherwise. False when the queue is full. */
  submit(io: QueuedIo): boolean {
    if (this.#queue.length === 0 && this.#admit(io, this.#clock.nowMs()) === 0) {
      io.start();
      return true;
    }
    if (this.#queue.length >= MAX_THROTTLED_IOS) return false;
    if (this.#queue.length === 0) this.#waitingSinceMs = this.#clock.nowMs();
    this.#queue.push(io);
    this.delayedIos++;
    this.#rearm();
    return true;
  }

  /** 0 and takes the tokens when `io` may pass now; else the ms to wait. */
  #admit(io: QueuedIo, now: number): number {
    let wait = 0;
    for (const [key] of costs(io)) wait = Math.max(wait, this.#buckets.get(key)?.waitMs(now) ?? 0);
    if (wait > 0) return wait;
    for (const [key, n] of costs(io)) this.#buckets.get(key)?.take(n);
    return 0;
  }

  #rearm(): void {
    this.#cancelTimer?.();
    this.#cancelTimer = null;
    const now = this.#clock.nowMs();
    while (this.#queue.length > 0) {
      const wait = this.#admit(this.#queue[0] as QueuedIo, now);
      if (wait > 0) {
        this.#cancelTimer = this.#clock.after(wait, () => {
          this.#cancelTimer = null;
          this.#rearm();
        });
        return;
      }
      (this.#queue.shift() as QueuedIo).start();
    }
    if (this.#waitingSinceMs >= 0) {
      this.#throttledMs += now - this.#waitingSinceMs;
      this.#waitingSinceMs = -1;
    }
  }

  /** Starts everything still queued, ignoring limits (the volume is going away). */
  drain(): void {
    this.#cancelTimer?.();
    this.#cancelTimer = null;
    for (const io of this.#queue.splice(0)) io.start();
  }
}
