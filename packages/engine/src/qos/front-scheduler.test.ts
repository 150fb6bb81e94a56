import { describe, expect, it } from "vitest";
import { FrontScheduler, type FrontWaiter, RESERVATION_CHECK_MS } from "./front-scheduler.js";
import { RESERVATION_EARLY_MS } from "./scheduler-client.js";
import type { Clock } from "./volume-throttle.js";

/** A clock the test moves, and turns of the event loop the test runs by hand. */
function harness(limits = { minPerTurn: 2, maxPerTurn: 8 }) {
  const clock: Clock & { now: number } = { now: 0, nowMs: () => clock.now, after: () => () => undefined };
  const turns: Array<() => void> = [];
  const front = new FrontScheduler(limits, clock, (fn) => turns.push(fn));
  front.setEngaged(true);
  /** Runs the turn armed last (the front arms one at a time). */
  const turn = (): void => {
    const next = turns.shift();
    expect(next).toBeDefined();
    next?.();
  };
  return { clock, front, turn, pendingTurns: () => turns.length };
}

/** A waiter that counts its runs. */
function waiter(log: string[], name: string): FrontWaiter {
  return { run: () => log.push(name) };
}

describe("FrontScheduler", () => {
  it("not engaged, every request starts at once and no turn is armed", () => {
    const { front, pendingTurns } = harness();
    front.setEngaged(false);
    const c = front.addClient(0, 1);
    for (let i = 0; i < 100; i++) expect(front.enter(c, waiter([], "x"))).toBe(true);
    expect(pendingTurns()).toBe(0);
  });

  it("lets the allowance start per turn, then starts the waiting in share-tag order at the next turn, weights honoured", () => {
    const { front, turn } = harness({ minPerTurn: 8, maxPerTurn: 8 });
    const light = front.addClient(0, 1);
    const heavy = front.addClient(0, 3);
    const log: string[] = [];
    for (let i = 0; i < 8; i++) expect(front.enter(light, waiter(log, "light"))).toBe(true);
    // The allowance is spent: everything else waits, one entry per request.
    for (let i = 0; i < 40; i++) expect(front.enter(light, waiter(log, "light"))).toBe(false);
    for (let i = 0; i < 40; i++) expect(front.enter(heavy, waiter(log, "heavy"))).toBe(false);
    for (let t = 0; t < 4; t++) turn();
    expect(log).toHaveLength(32);
    // The light volume ran 8 ahead of the heavy one's arrival; from then on 3 to 1.
    const heavyShare = log.filter((n) => n === "heavy").length / log.length;
    expect(heavyShare).toBeGreaterThan(0.7);
    expect(heavyShare).toBeLessThan(0.9);
  });

  it("starts a due reservation at once past the allowance, spaced 1/reservation apart, early by at most its slack", () => {
    const { clock, front, turn } = harness({ minPerTurn: 1, maxPerTurn: 1 });
    const flood = front.addClient(0, 1);
    const reserved = front.addClient(1000, 1);
    const log: string[] = [];
    expect(front.enter(flood, waiter(log, "f0"))).toBe(true);
    expect(front.enter(flood, waiter(log, "f1"))).toBe(false);
    // 1,000 IOPS: a tag per ms; those due within the slack start now, the next waits.
    let started = 0;
    while (front.enter(reserved, waiter(log, "r"))) started++;
    expect(started).toBe(RESERVATION_EARLY_MS + 1);
    expect(front.startedByReservation).toBe(started);
    // A millisecond on it is due: the next turn starts it for its reservation, before the flood's older request.
    clock.now += 1;
    turn();
    expect(log).toEqual(["r"]);
    expect(front.startedByReservation).toBe(started + 1);
  });

  it("an idle client comes back at the virtual time, not with the priority its old tags would give", () => {
    const { front, turn } = harness({ minPerTurn: 4, maxPerTurn: 4 });
    const busy = front.addClient(0, 1);
    const late = front.addClient(0, 1);
    const log: string[] = [];
    for (let i = 0; i < 4; i++) front.enter(busy, waiter(log, "busy"));
    for (let i = 0; i < 400; i++) front.enter(busy, waiter(log, "busy"));
    for (let t = 0; t < 50; t++) turn(); // 200 of busy's waiting start; `late` was idle meanwhile
    log.length = 0;
    for (let i = 0; i < 40; i++) front.enter(late, waiter(log, "late"));
    for (let t = 0; t < 10; t++) turn();
    // An even split from its return, not 40 in a row for the 200 it "missed".
    const lateShare = log.filter((n) => n === "late").length / log.length;
    expect(lateShare).toBeGreaterThan(0.35);
    expect(lateShare).toBeLessThan(0.65);
  });

  it("cancel withdraws a waiting request; removing a client starts what it had waiting", () => {
    const { front, turn } = harness({ minPerTurn: 1, maxPerTurn: 1 });
    const a = front.addClient(0, 1);
    const b = front.addClient(0, 1);
    const log: string[] = [];
    front.enter(a, waiter(log, "a0"));
    const gone = waiter(log, "a1");
    expect(front.enter(a, gone)).toBe(false);
    expect(front.enter(b, waiter(log, "b1"))).toBe(false);
    expect(front.cancel(a, gone)).toBe(true);
    expect(front.cancel(a, gone)).toBe(false);
    expect(front.queued).toBe(1);
    front.removeClient(b);
    expect(log).toEqual(["b1"]);
    expect(front.queued).toBe(0);
    turn();
    expect(log).toEqual(["b1"]);
  });

  it("shrinks its allowance while a reserved client whose requests pile up gets less than its reservation, and grows it back once none does", async () => {
    const { clock, front, turn } = harness({ minPerTurn: 2, maxPerTurn: 32 });
    const reserved = front.addClient(10_000, 1);
    const flood = front.addClient(0, 1);
    // One request per check period with another behind it: far short of 10,000 IOPS, held back.
    for (let i = 0; i < 10; i++) {
      front.enter(reserved, waiter([], "r"), true);
      front.enter(flood, waiter([], "f"));
      clock.now += RESERVATION_CHECK_MS;
      turn();
    }
    expect(front.allowance).toBe(2);
    // It stops asking: the allowance grows back, one request a check.
    for (let i = 0; i < 10; i++) {
      front.enter(flood, waiter([], "f"));
      clock.now += RESERVATION_CHECK_MS;
      turn();
    }
    expect(front.allowance).toBe(12);
  });

  it("keeps its allowance for a reserved client below its reservation that sends one request at a time, and after a quiet spell", () => {
    const { clock, front, turn } = harness({ minPerTurn: 2, maxPerTurn: 32 });
    const light = front.addClient(10_000, 1);
    const flood = front.addClient(0, 1);
    for (let i = 0; i < 10; i++) {
      front.enter(light, waiter([], "r"), false);
      front.enter(flood, waiter([], "f"));
      clock.now += RESERVATION_CHECK_MS;
      turn();
    }
    expect(front.allowance).toBe(32);
    // A backlogged request after a long quiet spell: that window is forgotten, not judged short.
    clock.now += 10 * RESERVATION_CHECK_MS;
    front.enter(light, waiter([], "r"), true);
    turn();
    expect(front.allowance).toBe(32);
  });

  it("a reservation does not pass its own volume's waiting requests; disengaging starts every waiting request", () => {
    const { clock, front } = harness({ minPerTurn: 1, maxPerTurn: 1 });
    const reserved = front.addClient(1000, 1);
    const log: string[] = [];
    // Ahead of its reservation: the next waits for a share turn.
    while (front.enter(reserved, waiter(log, "early"))) clock.now += 0;
    expect(front.queued).toBe(1);
    clock.now += 100; // due again, but its own request waits before it
    expect(front.enter(reserved, waiter(log, "late"))).toBe(false);
    front.setEngaged(false);
    expect(log).toEqual(["early", "late"]);
    expect(front.queued).toBe(0);
    expect(front.enter(reserved, waiter(log, "any"))).toBe(true);
  });
});

/**
 * The daemon's CPU as the front sees it: turns of an event loop in which each
 * started request costs `costUs` and each connection's requests (closed loop:
 * the next is sent `rttUs` after the reply) are parsed in arrival order.
 */
function simulate(reservationIops: number, engaged: boolean): { victim: number; flood: number } {
  const clock: Clock & { now: number } = { now: 0, nowMs: () => clock.now / 1000, after: () => () => undefined };
  let armed: (() => void) | null = null;
  const front = new FrontScheduler({ minPerTurn: 2, maxPerTurn: 64 }, clock, (fn) => {
    armed = fn;
  });
  front.setEngaged(engaged);
  const costUs = 10;
  const rttUs = 40;
  interface Conn {
    client: ReturnType<FrontScheduler["addClient"]>;
    arrivals: number[];
    waiting: boolean;
    granted: boolean;
    done: number;
    victim: boolean;
  }
  const victimClient = front.addClient(reservationIops, 1);
  const floodClient = front.addClient(0, 1);
  const conns: Conn[] = [
    { client: victimClient, arrivals: Array(8).fill(0), waiting: false, granted: false, done: 0, victim: true },
    ...Array.from({ length: 6 }, () => ({
      client: floodClient,
      arrivals: Array(64).fill(0) as number[],
      waiting: false,
      granted: false,
      done: 0,
      victim: false,
    })),
  ];
  const serve = (c: Conn): void => {
    // Parses what had arrived when its socket was read until one must wait for its turn.
    const readAt = clock.now;
    while (c.arrivals.length > 0 && (c.arrivals[0] as number) <= readAt) {
      if (!c.granted) {
        const entry: FrontWaiter = {
          run: () => {
            c.waiting = false;
            c.granted = true;
            serve(c);
          },
        };
        const behind = c.arrivals.filter((a) => a <= readAt).length > 1;
        if (!front.enter(c.client, entry, behind)) {
          c.waiting = true;
          return;
        }
      }
      c.granted = false;
      c.arrivals.shift();
      clock.now += costUs;
      if (clock.now > 1_000_000) c.done++;
      c.arrivals.push(clock.now + rttUs);
    }
  };
  while (clock.now < 3_000_000) {
    const turnFn: (() => void) | null = armed;
    armed = null;
    if (turnFn) (turnFn as () => void)();
    for (const c of conns) if (!c.waiting) serve(c);
    clock.now += 5; // the poll and the syscalls of a turn
  }
  const perSecond = (victim: boolean) => conns.filter((c) => c.victim === victim).reduce((n, c) => n + c.done, 0) / 2;
  return { victim: perSecond(true), flood: perSecond(false) };
}

describe("FrontScheduler on a simulated CPU-bound daemon (a victim at qd8 beside 6 connections flooding at qd64)", () => {
  it("a reserved victim gets its reservation where arrival order gives it a few percent", () => {
    const fifo = simulate(0, false);
    const reserved = simulate(20_000, true);
    console.log(
      `simulated: victim unscheduled ${fifo.victim}/s (flood ${fifo.flood}/s); reserving 20000 ${reserved.victim}/s (flood ${reserved.flood}/s)`,
    );
    expect(fifo.victim).toBeLessThan(20_000);
    expect(reserved.victim).toBeGreaterThanOrEqual(20_000);
    expect(reserved.victim).toBeGreaterThan(2 * fifo.victim);
  });
});
