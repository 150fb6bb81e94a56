import { describe, expect, it } from "vitest";
import { RangeGate } from "./range-gate.js";
import { RegionMap, regionsOf } from "./region-map.js";

const tick = () => new Promise((r) => setImmediate(r));

describe("RangeGate", () => {
  it("admits writes at once while nothing is locked", () => {
    const g = new RangeGate();
    const leave = g.enter(0, 4096);
    expect(typeof leave).toBe("function");
    expect(g.inflight).toBe(1);
    (leave as () => void)();
    expect(g.inflight).toBe(0);
  });

  it("a lock waits for the writes in its region, holds new ones back, and lets others through", async () => {
    const g = new RangeGate();
    const inside = g.enter(100, 10) as () => void;
    const outside = g.enter(5000, 10) as () => void;
    let locked = false;
    const lockP = g.lock(0, 1000).then((u) => {
      locked = true;
      return u;
    });
    await tick();
    expect(locked).toBe(false); // the write at 100 is still in flight
    outside();
    await tick();
    expect(locked).toBe(false);
    inside();
    const unlock = await lockP;
    expect(locked).toBe(true);
    // A write into the locked region waits; one elsewhere (not overlapping it either) does not.
    const blocked = g.enter(999, 2);
    expect(blocked).toBeInstanceOf(Promise);
    expect(typeof g.enter(1001, 10)).toBe("function");
    let entered = false;
    void (blocked as Promise<() => void>).then(() => {
      entered = true;
    });
    await tick();
    expect(entered).toBe(false);
    unlock();
    await tick();
    expect(entered).toBe(true);
  });

  it("overlapping writes go one at a time in arrival order, also through a chain; others at once", async () => {
    const g = new RangeGate();
    const order: string[] = [];
    const w1 = g.enter(0, 8192) as () => void;
    const w2 = g.enter(4096, 8192); // overlaps w1
    const w3 = g.enter(8192, 8192); // overlaps w2 only, which is still waiting: it must not pass w2
    const w4 = g.enter(1 << 20, 4096); // overlaps nothing
    expect(w2).toBeInstanceOf(Promise);
    expect(w3).toBeInstanceOf(Promise);
    expect(typeof w4).toBe("function");
    expect(g.inflight).toBe(2);
    expect(g.entered).toBe(4);
    void (w2 as Promise<() => void>).then((leave) => {
      order.push("w2");
      setImmediate(leave);
    });
    void (w3 as Promise<() => void>).then((leave) => {
      order.push("w3");
      leave();
    });
    await tick();
    expect(order).toEqual([]);
    w1();
    await tick();
    expect(order).toEqual(["w2"]);
    expect(g.inflight).toBe(2); // w2 and w4; w3 waits for w2 to leave
    await tick();
    await tick();
    expect(order).toEqual(["w2", "w3"]);
    (w4 as () => void)();
    expect(g.entered).toBe(0);
  });

  it("overlapping locks take turns", async () => {
    const g = new RangeGate();
    const u1 = await g.lock(0, 100);
    let second = false;
    const p = g.lock(50, 100).then((u) => {
      second = true;
      return u;
    });
    await tick();
    expect(second).toBe(false);
    u1();
    (await p)();
    expect(second).toBe(true);
  });
});

describe("RegionMap", () => {
  it("marks each region a range touches once, within the volume", () => {
    const m = new RegionMap(10 * 1024 * 1024);
    m.addRange(1024 * 1024 - 1, 2); // straddles regions 0 and 1
    m.addRange(0, 4096);
    m.addRange(9 * 1024 * 1024, 4 * 1024 * 1024); // runs past the end
    expect([...m]).toEqual([0, 1, 9]);
    expect(m.count).toBe(3);
    expect(regionsOf(0, 0)).toEqual({ first: 0, last: 0 });
  });
});
