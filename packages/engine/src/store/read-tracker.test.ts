import { describe, expect, it } from "vitest";
import { ReadTracker } from "./read-tracker.js";

describe("ReadTracker", () => {
  it("runs a callback only after every read that began before it has ended, in order", () => {
    const t = new ReadTracker();
    const ran: string[] = [];
    const r1 = t.begin();
    const r2 = t.begin();
    t.afterCurrentReads(() => ran.push("a"));
    const r3 = t.begin(); // began after "a" was queued: "a" does not wait for it
    t.afterCurrentReads(() => ran.push("b"));
    t.end(r1);
    expect(ran).toEqual([]);
    t.end(r2);
    expect(ran).toEqual(["a"]);
    t.end(r3);
    expect(ran).toEqual(["a", "b"]);
  });

  it("runs at once when no read is in flight, and keeps order behind an earlier waiter", () => {
    const t = new ReadTracker();
    const ran: number[] = [];
    t.afterCurrentReads(() => ran.push(1));
    expect(ran).toEqual([1]);
    const r = t.begin();
    t.afterCurrentReads(() => ran.push(2));
    t.afterCurrentReads(() => ran.push(3));
    expect(ran).toEqual([1]);
    t.end(r);
    expect(ran).toEqual([1, 2, 3]);
  });
});
