import { SchedulerClient } from "./scheduler-client.js";
import { type Clock, realClock } from "./volume-throttle.js";

/** An I/O the disk scheduler holds until a slot is free. */
export interface ScheduledIo {
  /** Starts the I/O; the caller reports its end with {@link DiskScheduler.done}. */
  run(): void;
}

/**
 * Orders I/O to one disk when it is saturated, after mClock (Gulati et al.,
 * OSDI 2010): each I/O gets a reservation tag (spaced 1/reservation apart)
 * and a share tag (spaced 1/weight apart). While fewer than `maxInFlight`
 * I/Os run, everything starts at once. Once the disk is full, the next slot
 * goes to the I/O with the smallest reservation tag that is due, so every
 * volume gets its floor. If none is due, it goes to the smallest share tag,
 * so the rest is split by weight. Per-volume limits are enforced before
 * this, by each volume's throttle. How tags move: {@link SchedulerClient}.
 */
export class DiskScheduler {
  readonly #clock: Clock;
  /** I/Os allowed to run at once; beyond it the scheduler, not the thread pool's FIFO, decides the order. */
  maxInFlight: number;
  inFlight = 0;
  readonly #clients = new Set<SchedulerClient<ScheduledIo>>();
  #queued = 0;
  /** The share tag of the last I/O started by share: where an idle client's next tag starts (virtual time). */
  #virtualP = 0;

  constructor(maxInFlight: number, clock: Clock = realClock) {
    this.maxInFlight = maxInFlight;
    this.#clock = clock;
  }

  /** I/Os waiting for a slot. */
  get queued(): number {
    return this.#queued;
  }

  addClient(reservationIops: number, weight: number): SchedulerClient<ScheduledIo> {
    const c = new SchedulerClient<ScheduledIo>(reservationIops, weight);
    this.#clients.add(c);
    return c;
  }

  /** Forgets a client; its waiting I/Os start now (past the limit: the volume is going away). */
  removeClient(c: SchedulerClient<ScheduledIo>): void {
    this.#clients.delete(c);
    for (const q of c.queue.splice(0)) {
      this.#queued--;
      this.inFlight++;
      q.io.run();
    }
  }

  submit(c: SchedulerClient<ScheduledIo>, io: ScheduledIo): void {
    if (this.inFlight < this.maxInFlight && this.#queued === 0) {
      this.inFlight++;
      io.run();
      return;
    }
    c.queue.push({ io, p: c.takeShareTag(this.#virtualP) });
    this.#queued++;
  }

  /** Reports the end of a running I/O and starts the next one, if any waits. */
  done(): void {
    this.inFlight--;
    if (this.#queued > 0) this.#startNext();
  }

  #startNext(): void {
    const now = this.#clock.nowMs();
    let byR: SchedulerClient<ScheduledIo> | null = null;
    let rTag = Number.POSITIVE_INFINITY;
    let byP: SchedulerClient<ScheduledIo> | null = null;
    let pTag = Number.POSITIVE_INFINITY;
    for (const c of this.#clients) {
      const head = c.queue[0];
      if (!head) continue;
      const r = c.dueReservationTag(now);
      if (r !== null && r < rTag) [byR, rTag] = [c, r];
      if (head.p < pTag) [byP, pTag] = [c, head.p];
    }
    const c = byR ?? byP;
    if (!c) return;
    const next = c.queue.shift() as { io: ScheduledIo; p: number };
    if (byR) c.startedForReservation(rTag, true);
    else {
      c.servedByWeight++;
      this.#virtualP = Math.max(this.#virtualP, next.p);
    }
    this.#queued--;
    this.inFlight++;
    next.io.run();
  }
}
