import assert from "node:assert";
import { SchedulerClient } from "./scheduler-client.js";
import { type Clock, realClock } from "./volume-throttle.js";

/** One request waiting at the front for its turn. */
export interface FrontWaiter {
  /** Its turn came: it may start now. */
  run(): void;
}

/** How often the front checks reserved volumes against their reservations. */
export const RESERVATION_CHECK_MS = 20;
/**
 * While a reservation falls short the allowance halves; while none does it
 * grows by one request a check (from the least to the most in about a
 * second): turns shrink fast when a reserved volume needs them short, and
 * grow back slowly, so the allowance settles just short enough.
 */
const SHRINK = 0.5;
const GROW = 1;
/**
 * A reserved volume counts as kept only once it got this share more than its
 * reservation: aiming at the reservation itself would settle around it,
 * half the checks short of it.
 */
const KEPT_MARGIN = 0.02;

/** How the front waits for the next turn of the event loop (injected so tests step turns by hand). */
export type NextTurn = (fn: () => void) => void;

const nextTurn: NextTurn = (fn) => {
  setImmediate(fn);
};

/**
 * Orders NBD requests at the front of the daemon, where the CPU rather than
 * the disk is the server: the event loop reads, parses and answers requests
 * in the order sockets turn up, so a flood of N connections gets N turns for
 * a reserved volume's one, and the page cache answers reads before any disk
 * scheduler sees a queue. Requests served from memory finish within the turn
 * they started in, so no count of requests in flight ever fills; what the
 * front rations instead is requests started per turn of the event loop.
 *
 * A request whose reservation tag is due starts at once (mClock, Gulati et
 * al., OSDI 2010: tags spaced 1/reservation apart, so a volume gets its
 * reserved IOPS and no more this way). Others: each turn lets an allowance of
 * requests start; beyond it a request waits (its connection stops parsing),
 * and at the next turn the waiting ones start in tag order: first any whose
 * reservation tag came due meanwhile, then by share tag (start-time
 * fair queueing by weight, where a client that was idle starts from the
 * virtual time of the last request started, not from its old tags).
 *
 * A volume with few requests in flight gets at most its queue depth per
 * turn, so what gives it its rate is short turns: every
 * {@link RESERVATION_CHECK_MS} the front compares what each reserved volume
 * whose requests piled up got with its reservation, and shrinks the
 * allowance while one falls short (the flood waits more, turns come faster)
 * and grows it back while none does (big turns cost less per request).
 * Disengaged (nothing reserves or weighs), every request starts at once.
 */
export class FrontScheduler {
  /** Least and most requests that may start in one turn of the event loop. */
  readonly minPerTurn: number;
  readonly maxPerTurn: number;
  /** Requests that may start in one turn now, between the two. */
  #allowance: number;
  #checkedAtMs: number;
  /** Whether any volume reserves or weighs: until then every request starts at once. */
  #engaged = false;
  readonly #clock: Clock;
  readonly #nextTurn: NextTurn;
  /** Every client, for the reservation check; and those with a request waiting (the only ones a turn looks at). */
  readonly #clients = new Set<SchedulerClient<FrontWaiter>>();
  readonly #waiting = new Set<SchedulerClient<FrontWaiter>>();
  /** Requests started this turn (past the allowance for due reservations). */
  #used = 0;
  #queued = 0;
  /** The share tag of the last request started by share: where an idle client's next tag starts (virtual time). */
  #virtualP = 0;
  #turnArmed = false;
  /** Requests started for their reservation and by share, and turns taken (for tests and metrics). */
  startedByReservation = 0;
  startedByShare = 0;
  turns = 0;

  constructor(limits: { minPerTurn: number; maxPerTurn: number }, clock: Clock = realClock, turn: NextTurn = nextTurn) {
    const { minPerTurn, maxPerTurn } = limits;
    assert(
      Number.isSafeInteger(minPerTurn) && minPerTurn > 0 && Number.isSafeInteger(maxPerTurn) && maxPerTurn >= minPerTurn,
      "the front's allowance is 1 or more requests a turn, its least no more than its most",
    );
    this.minPerTurn = minPerTurn;
    this.maxPerTurn = maxPerTurn;
    this.#allowance = maxPerTurn;
    this.#clock = clock;
    this.#checkedAtMs = clock.nowMs();
    this.#nextTurn = turn;
  }

  get engaged(): boolean {
    return this.#engaged;
  }

  /** Engages the front (some volume reserves or weighs) or lets every request start at once, the waiting ones now. */
  setEngaged(on: boolean): void {
    this.#engaged = on;
    if (!on) for (const c of [...this.#waiting]) this.#runWaiting(c);
  }

  /** Requests that may start in one turn now. */
  get allowance(): number {
    return this.#allowance;
  }

  get queued(): number {
    return this.#queued;
  }

  addClient(reservationIops: number, weight: number): SchedulerClient<FrontWaiter> {
    const c = new SchedulerClient<FrontWaiter>(reservationIops, weight);
    this.#clients.add(c);
    return c;
  }

  /** Forgets a client (its volume's QoS went away); whatever of it waits starts now. */
  removeClient(c: SchedulerClient<FrontWaiter>): void {
    this.#clients.delete(c);
    this.#runWaiting(c);
  }

  /** Starts every request `c` has waiting, past the allowance (its volume goes, or the front disengages). */
  #runWaiting(c: SchedulerClient<FrontWaiter>): void {
    this.#waiting.delete(c);
    for (const q of c.queue.splice(0)) {
      this.#queued--;
      q.io.run();
    }
  }

  /**
   * True when a request of `c` may start now; else `io.run` runs at a later
   * turn, in tag order (inside that turn: the waiter may enter its next
   * request from `run`, and it starts there too while its tag leads).
   */
  enter(c: SchedulerClient<FrontWaiter>, io: FrontWaiter, backlogged = false): boolean {
    if (!this.#engaged) return true;
    const now = this.#clock.nowMs();
    this.#armTurn();
    if (backlogged) c.frontBacklogged++;
    // A due reservation tag starts at once, past the allowance: reservation tags space them 1/reservation
    // apart, so that is the reservation and no more. Due a little early too: a client sends its queue depth
    // at once. It takes no share tag: what a volume gets for its reservation is not held against its share
    // of the rest (mClock).
    // Not past the volume's own waiting requests (of its other connections): they start first, at the next turn.
    const r = c.queue.length === 0 ? c.dueReservationTag(now) : null;
    if (r !== null) {
      c.startedForReservation(r, false);
      this.startedByReservation++;
      this.#start(c);
      return true;
    }
    const p = c.takeShareTag(this.#virtualP);
    if (this.#used < this.#allowance && (this.#queued === 0 || p <= this.#leastWaitingP())) {
      this.#startByShare(c, p);
      return true;
    }
    c.queue.push({ io, p });
    this.#waiting.add(c);
    this.#queued++;
    return false;
  }

  /** Withdraws a waiting `io` (its connection closed); false when it is not waiting. */
  cancel(c: SchedulerClient<FrontWaiter>, io: FrontWaiter): boolean {
    const at = c.queue.findIndex((q) => q.io === io);
    if (at < 0) return false;
    c.queue.splice(at, 1);
    if (c.queue.length === 0) this.#waiting.delete(c);
    this.#queued--;
    return true;
  }

  #leastWaitingP(): number {
    let least = Number.POSITIVE_INFINITY;
    for (const c of this.#waiting) least = Math.min(least, (c.queue[0] as { p: number }).p);
    return least;
  }

  #start(c: SchedulerClient<FrontWaiter>): void {
    this.#used++;
    c.frontStarted++;
  }

  #startByShare(c: SchedulerClient<FrontWaiter>, p: number): void {
    this.startedByShare++;
    c.servedByWeight++;
    this.#virtualP = Math.max(this.#virtualP, p);
    this.#start(c);
  }

  #armTurn(): void {
    if (this.#turnArmed) return;
    this.#turnArmed = true;
    this.#nextTurn(this.#turn);
  }

  /**
   * A new turn: the allowance is back, and the waiting start in tag order up
   * to it, each run at once (its connection parses on and may start more
   * while its tags lead); what they take counts against the turn now
   * beginning, in which the sockets are read next.
   */
  readonly #turn = (): void => {
    this.turns++;
    this.#turnArmed = false;
    this.#used = 0;
    const now = this.#clock.nowMs();
    if (now - this.#checkedAtMs >= 2 * RESERVATION_CHECK_MS) this.#forgetWindow(now);
    else if (now - this.#checkedAtMs >= RESERVATION_CHECK_MS) this.#checkReservations(now);
    while (this.#queued > 0 && this.#used < this.#allowance) this.#startNext(now);
    // Keeps turning while requests start: a quiet front arms nothing.
    if (this.#used > 0 || this.#queued > 0) this.#armTurn();
  };

  /** Starts a new window of the reservation check from now (a window spent partly quiet says nothing and is dropped). */
  #forgetWindow(now: number): void {
    this.#checkedAtMs = now;
    for (const c of this.#clients) {
      c.frontStarted = 0;
      c.frontBacklogged = 0;
    }
  }

  /**
   * Shrinks the allowance while a reserved volume got less than its
   * reservation with its requests piling up behind each other (the daemon
   * held it back: one that sends a request at a time, below its reservation,
   * is not short of anything the front can give); grows it otherwise.
   */
  #checkReservations(now: number): void {
    const elapsedS = (now - this.#checkedAtMs) / 1000;
    let short = false;
    for (const c of this.#clients) {
      const pressed = c.frontBacklogged > 0 || c.queue.length > 0;
      if (c.reservationIops > 0 && pressed && c.frontStarted < c.reservationIops * elapsedS * (1 + KEPT_MARGIN)) short = true;
    }
    this.#forgetWindow(now);
    this.#allowance = short
      ? Math.max(this.minPerTurn, Math.floor(this.#allowance * SHRINK))
      : Math.min(this.maxPerTurn, this.#allowance + GROW);
  }

  #startNext(now: number): void {
    let byR: SchedulerClient<FrontWaiter> | null = null;
    let rTag = Number.POSITIVE_INFINITY;
    let byP: SchedulerClient<FrontWaiter> | null = null;
    let pTag = Number.POSITIVE_INFINITY;
    for (const c of this.#waiting) {
      const r = c.dueReservationTag(now);
      if (r !== null && r < rTag) [byR, rTag] = [c, r];
      const p = (c.queue[0] as { p: number }).p;
      if (p < pTag) [byP, pTag] = [c, p];
    }
    const c = byR ?? byP;
    if (!c) return;
    const next = c.queue.shift() as { io: FrontWaiter; p: number };
    if (c.queue.length === 0) this.#waiting.delete(c);
    this.#queued--;
    if (byR) {
      c.startedForReservation(rTag, true);
      this.startedByReservation++;
      this.#start(c);
    } else this.#startByShare(c, next.p);
    next.io.run();
  }
}
