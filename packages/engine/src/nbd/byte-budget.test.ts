import { describe, expect, it } from "vitest";
import { type BudgetWaiter, ByteBudget } from "./byte-budget.js";

class Waiter implements BudgetWaiter {
  granted = 0;
  onBudget(): void {
    this.granted++;
  }
}

describe("ByteBudget", () => {
  it("grants what fits, queues the rest in FIFO order, and is back to 0 when all is released", () => {
    const b = new ByteBudget(100, { smallReserveBytes: 0 });
    const [a, c, e] = [new Waiter(), new Waiter(), new Waiter()];
    expect(b.acquire(60, a)).toBe(true);
    expect(b.acquire(50, c)).toBe(false);
    // Fits, but waits behind the older waiter: a large request is not starved by small ones.
    expect(b.acquire(10, e)).toBe(false);
    expect(b.waiters).toBe(2);
    b.release(60);
    expect([c.granted, e.granted]).toEqual([1, 1]);
    expect(b.usedBytes).toBe(60);
    b.release(50);
    b.release(10);
    expect(b.usedBytes).toBe(0);
    expect(b.waiters).toBe(0);
  });

  it("a request larger than the whole budget runs alone once nothing else is held", () => {
    const b = new ByteBudget(100, { smallReserveBytes: 0 });
    const [a, big] = [new Waiter(), new Waiter()];
    expect(b.acquire(30, a)).toBe(true);
    expect(b.acquire(500, big)).toBe(false);
    b.release(30);
    expect(big.granted).toBe(1);
    expect(b.usedBytes).toBe(500);
    expect(b.acquire(1, a)).toBe(false);
    b.release(500);
    expect(a.granted).toBe(1);
    b.release(1);
    expect(b.usedBytes).toBe(0);
  });

  it("a cancelled head waiter stops blocking the ones behind it", () => {
    const b = new ByteBudget(100, { smallReserveBytes: 0 });
    const [a, big, small] = [new Waiter(), new Waiter(), new Waiter()];
    expect(b.acquire(50, a)).toBe(true);
    expect(b.acquire(80, big)).toBe(false);
    expect(b.acquire(20, small)).toBe(false);
    b.cancel(big);
    expect([big.granted, small.granted]).toEqual([0, 1]);
    b.cancel(big);
    b.release(70);
    expect(b.usedBytes).toBe(0);
  });

  it("large requests that are never released cannot take the small requests' reserve; small ones run from it while a large one waits", () => {
    const b = new ByteBudget(1000, { smallReserveBytes: 200 });
    const [h1, h2, big, s1, s2, s3] = [new Waiter(), new Waiter(), new Waiter(), new Waiter(), new Waiter(), new Waiter()];
    // Two holders that never give back (clients that stopped reading their replies) take all a large request may.
    expect(b.acquire(400, h1)).toBe(true);
    expect(b.acquire(400, h2)).toBe(true);
    expect(b.acquire(300, big)).toBe(false);
    // A small request still runs: the reserve is its own.
    expect(b.acquire(150, s1)).toBe(true);
    // While the large one waits, small ones stay within the reserve, so that releases gather for it.
    expect(b.acquire(100, s2)).toBe(false);
    b.release(400);
    expect([big.granted, s2.granted]).toEqual([1, 1]);
    expect(b.usedBytes).toBe(950);
    // With no large waiter, a small request may use what is free beyond the reserve.
    expect(b.acquire(50, s3)).toBe(true);
    for (const n of [400, 300, 150, 100, 50]) b.release(n);
    expect([b.usedBytes, b.waiters]).toEqual([0, 0]);
  });

  it("a large request that can only run alone is not starved by a stream of small ones: they queue behind it", () => {
    const b = new ByteBudget(1000, { smallReserveBytes: 200 });
    const [small, big, next] = [new Waiter(), new Waiter(), new Waiter()];
    expect(b.acquire(100, small)).toBe(true);
    // Larger than the 800 bytes large requests may hold together: it runs once nothing else is held.
    expect(b.acquire(900, big)).toBe(false);
    // Small requests keep coming; each waits behind it instead of keeping the budget from ever emptying.
    expect(b.acquire(50, next)).toBe(false);
    expect(next.granted).toBe(0);
    // Once the budget empties the large one runs first; the small one fits beside it.
    b.release(100);
    expect([big.granted, next.granted, b.usedBytes]).toEqual([1, 1, 950]);
    b.release(900);
    b.release(50);
    expect([b.usedBytes, b.waiters]).toEqual([0, 0]);
  });

  it("releasing more than is held is a programming error", () => {
    const b = new ByteBudget(100, { smallReserveBytes: 0 });
    expect(() => b.release(1)).toThrow();
  });

  it("random acquires and releases never hold more than the limit (or one oversized request alone)", () => {
    let seed = 12345;
    const rand = (n: number): number => {
      seed = (seed * 1103515245 + 12345) % 2 ** 31;
      return seed % n;
    };
    console.log("seed 12345");
    const b = new ByteBudget(1000);
    const held: number[] = [];
    const waiting: Array<{ w: Waiter; bytes: number }> = [];
    for (let i = 0; i < 3_000; i++) {
      if (rand(2) === 0 || held.length === 0) {
        const w = new Waiter();
        const bytes = 1 + rand(1200);
        if (b.acquire(bytes, w)) held.push(bytes);
        else waiting.push({ w, bytes });
      } else {
        b.release(held.splice(rand(held.length), 1)[0] as number);
      }
      for (let k = waiting.length - 1; k >= 0; k--) {
        const x = waiting[k] as { w: Waiter; bytes: number };
        if (x.w.granted) {
          held.push(x.bytes);
          waiting.splice(k, 1);
        }
      }
      const sum = held.reduce((s, x) => s + x, 0);
      expect(b.usedBytes).toBe(sum);
      expect(sum <= 1000 || held.length === 1).toBe(true);
    }
    while (held.length > 0 || waiting.length > 0) {
      if (held.length > 0) b.release(held.pop() as number);
      for (let k = waiting.length - 1; k >= 0; k--) {
        const x = waiting[k] as { w: Waiter; bytes: number };
        if (x.w.granted) {
          held.push(x.bytes);
          waiting.splice(k, 1);
        }
      }
    }
    expect(b.usedBytes).toBe(0);
  });
});
