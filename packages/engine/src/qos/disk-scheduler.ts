import { type Clock, realClock } from "./volume-throttle.js";

/** An I/O the disk scheduler holds until a slot is free. */
export interface ScheduledIo {
  /** Starts the I/O; the caller reports its end with {@link DiskScheduler.done}. */
  run(): void;
}

/** One volume as the scheduler sees it: its floor, its share and its waiting I/Os with their tags. */
export class SchedulerClient {
  /** Guaranteed IOPS while the disk is saturated (0: none). */
  reservationIops: number;
  weight: number;
  readonly queue: Array<{ io: ScheduledIo; r: number; p: number }> = [];
  /** Tags of the last I/O queued (ms): reservation and proportional share. */
  lastR = Number.NEGATIVE_INFINITY;
  lastP = Number.NEGATIVE_INFINITY;
  /** I/Os dispatched in the reservation phase and in the weight phase (for tests and metrics). */
  servedByReservation = 0;
  servedByWeight = 0;
  /** Requests the front started for it since the front last looked at reservations kept (FrontScheduler). */
  frontStarted = 0;

  constructor(reservationIops: number, weight: number) {
    this.reservationIops = reservationIops;
    this.weight = weight;
  }
}

/**
 * Orders I/O to one disk when it is saturated, after mClock (Gulati et al.,
 * OSDI 2010): each I/O gets a reservation tag (spaced 1/reservation apart)
 * and a share tag (spaced 1/weight apart). While fewer than `maxInFlight`
 * I/Os run, everything starts at once. Once the disk is full, the next slot
 * goes to the I/O with the smallest reservation tag that is due, so every
 * volume gets its floor. If none is due, it goes to the smallest share tag,
 * so the rest is split by weight. Per-volume limits are enforced before
 * this, by each volume's throttle.
 */
export class DiskScheduler {
  readonly #clock: Clock;
  /** I/Os allowed to run at once; beyond it the scheduler, not the thread pool's FIFO, decides the order. */
  maxInFlight: number;
  inFlight = 0;
  readonly #clients = new Set<SchedulerClient>();
  #queued = 0;

  constructor(maxInFlight: number, clock: Clock = realClock) {
    this.maxInFlight = maxInFlight;
    this.#clock = clock;
  }

  /** I/Os waiting for a slot. */
  get queued(): number {
    return this.#queued;
  }

  addClient(reservationIops: number, weight: number): SchedulerClient {
    const c = new SchedulerClient(reservationIops, weight);
    this.#clients.add(c);
    return c;
  }

  /** Forgets a client; its waiting I/Os still run. */
  removeClient(c: SchedulerClient): void {
    while (c.queue.length > 0) this.#startNext();
    this.#clients.delete(c);
  }

  submit(c: SchedulerClient, io: ScheduledIo): void {
    if (this.inFlight < this.maxInFlight && this.#queued === 0) {
      this.inFlight++;
      io.run();
      return;
    }
    const now = this.#clock.nowMs();
    const r = c.reservationIops > 0 ? Math.max(c.lastR + 1000 / c.reservationIops, now) : Number.POSITIVE_INFINITY;
    const p = Math.max(c.lastP + 1000 / c.weight, now);
    c.lastR = r;
    c.lastP = p;
    c.queue.push({ io, r, p });
    this.#queued++;
  }

  /** Reports the end of a running I/O and starts the next one, if any waits. */
  done(): void {
    this.inFlight--;
    if (this.#queued > 0) this.#startNext();
  }

  #startNext(): void {
    const now = this.#clock.nowMs();
    let byR: SchedulerClient | null = null;
    let byP: SchedulerClient | null = null;
    for (const c of this.#clients) {
      const head = c.queue[0];
      if (!head) continue;
      if (head.r <= now && (byR === null || head.r < (byR.queue[0]?.r ?? Number.POSITIVE_INFINITY))) byR = c;
      if (byP === null || head.p < (byP.queue[0]?.p ?? Number.POSITIVE_INFINITY)) byP = c;
    }
    const c = byR ?? byP;
    if (!c) return;
    const next = c.queue.shift() as { io: ScheduledIo };
    if (byR) c.servedByReservation++;
    else c.servedByWeight++;
    this.#queued--;
    this.inFlight++;
    next.io.run();
  }
}
