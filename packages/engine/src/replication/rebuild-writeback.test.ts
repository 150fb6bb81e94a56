import { describe, expect, it } from "vitest";
import { RebuildWriteback } from "./rebuild-writeback.js";

/** A flush the test ends by hand. */
function manualFlush(): { flush: () => Promise<void>; started: number; end(error?: Error): void } {
  const pending: Array<{ resolve: () => void; reject: (e: Error) => void }> = [];
  const f = {
    started: 0,
    flush: () =>
      new Promise<void>((resolve, reject) => {
        f.started++;
        pending.push({ resolve, reject });
      }),
    end(error?: Error) {
      const p = pending.shift();
      if (!p) throw new Error("no flush in flight");
      if (error) p.reject(error);
      else p.resolve();
    },
  };
  return f;
}

const turn = () => new Promise((r) => setImmediate(r));

describe("RebuildWriteback", () => {
  it("starts a flush once an interval is copied, lets the copy go on during it, and holds it back once another interval is copied", async () => {
    const f = manualFlush();
    const w = new RebuildWriteback(f.flush, 100);
    await w.copied(60);
    expect(f.started).toBe(0);
    await w.copied(60); // 120 copied: a flush starts, the copy goes on
    expect(f.started).toBe(1);
    await w.copied(60);
    let released = false;
    const held = w.copied(60).then(() => {
      released = true;
    }); // another interval since the flush began: wait for it
    await turn();
    expect(released).toBe(false);
    f.end();
    await held;
    expect(released).toBe(true);
    expect(f.started).toBe(2); // the waiter started the next one
    f.end();
    await w.settle();
    expect(w.flushes).toBe(2);
  });

  it("a failed flush fails the next copy and settle, once and for all", async () => {
    const f = manualFlush();
    const w = new RebuildWriteback(f.flush, 10);
    await w.copied(10);
    f.end(new Error("fdatasync failed"));
    await turn();
    await expect(w.copied(1)).rejects.toThrow("fdatasync failed");
    await expect(w.settle()).rejects.toThrow("fdatasync failed");
    expect(f.started).toBe(1);
  });

  it("refuses an interval that is not positive", () => {
    expect(() => new RebuildWriteback(async () => undefined, 0)).toThrow(RangeError);
  });
});
