import { afterEach, beforeEach, describe, expect, it } from "vitest";
import { allSettledOrThrow, alongside } from "./concurrent.js";

let unhandled: unknown[] = [];
const onUnhandled = (reason: unknown) => unhandled.push(reason);
beforeEach(() => {
  unhandled = [];
  process.on("unhandledRejection", onUnhandled);
});
afterEach(() => {
  process.off("unhandledRejection", onUnhandled);
});

const wait = (ms: number) => new Promise((resolve) => setTimeout(resolve, ms));

/** A load that resolves with `value` after `ms`, rejects after `failMs`, or stops when told; `state` says whether it is still running. */
function load<T>(value: T, ms: number, stop: AbortSignal, state: { running: number }, failMs?: number): Promise<T> {
  state.running++;
  return new Promise<T>((resolve, reject) => {
    let done = false;
    const end = (settle: () => void) => {
      if (done) return;
      done = true;
      clearTimeout(timer);
      state.running--;
      settle();
    };
    const timer =
      failMs === undefined
        ? setTimeout(() => end(() => resolve(value)), ms)
        : setTimeout(() => end(() => reject(new Error(`load ${String(value)} failed`))), failMs);
    stop.addEventListener("abort", () => end(() => reject(new Error("stopped"))), { once: true });
  });
}

describe("alongside", () => {
  it("resolves with the foreground's value and every load's, once all are done", async () => {
    const state = { running: 0 };
    const r = await alongside(
      (stop) => [load("a", 30, stop, state), load("b", 60, stop, state)],
      async () => {
        await wait(10);
        return 7;
      },
    );
    expect(r).toEqual({ value: 7, loads: ["a", "b"] });
    expect(state.running).toBe(0);
  });

  it("a load failing while the foreground runs: no unhandled rejection; its error once the foreground is done", async () => {
    const state = { running: 0 };
    let foregroundDone = false;
    await expect(
      alongside(
        (stop) => [load("a", 0, stop, state, 10), load("b", 50, stop, state)],
        async () => {
          await wait(100);
          foregroundDone = true;
        },
      ),
    ).rejects.toThrow("load a failed");
    expect(foregroundDone).toBe(true);
    expect(state.running).toBe(0);
    await wait(20);
    expect(unhandled).toEqual([]);
  });

  it("the foreground failing stops the loads, waits for them, and throws the foreground's error", async () => {
    const state = { running: 0 };
    const started = performance.now();
    await expect(
      alongside(
        (stop) => [load("a", 60_000, stop, state)],
        async () => {
          await wait(10);
          throw new Error("foreground failed");
        },
      ),
    ).rejects.toThrow("foreground failed");
    expect(state.running).toBe(0);
    expect(performance.now() - started).toBeLessThan(10_000);
    await wait(20);
    expect(unhandled).toEqual([]);
  });

  it("a load failing tells the foreground (which may stop early) and stops the other loads; the load's error is thrown", async () => {
    const state = { running: 0 };
    const started = performance.now();
    await expect(
      alongside(
        (stop) => [load("a", 0, stop, state, 10), load("b", 60_000, stop, state)],
        async (loadFailed) => {
          await new Promise((resolve) => loadFailed.addEventListener("abort", resolve, { once: true }));
          throw new Error("foreground stopped");
        },
      ),
    ).rejects.toThrow("load a failed");
    expect(state.running).toBe(0);
    expect(performance.now() - started).toBeLessThan(10_000);
    await wait(20);
    expect(unhandled).toEqual([]);
  });

  it("the foreground failing first: its error wins over the loads it stopped", async () => {
    const state = { running: 0 };
    await expect(
      alongside(
        (stop) => [load("a", 60_000, stop, state), load("b", 0, stop, state, 200)],
        async () => {
          await wait(30);
          throw new Error("foreground failed");
        },
      ),
    ).rejects.toThrow("foreground failed");
    await wait(20);
    expect(unhandled).toEqual([]);
  });
});

describe("allSettledOrThrow", () => {
  it("resolves with every value in order", async () => {
    expect(await allSettledOrThrow([wait(20).then(() => 1), Promise.resolve(2)])).toEqual([1, 2]);
  });

  it("one failing: the rest are still awaited before it rejects with the first failure", async () => {
    let slowDone = false;
    const slow = wait(80).then(() => {
      slowDone = true;
      return 3;
    });
    await expect(
      allSettledOrThrow([Promise.reject(new Error("first")), slow, Promise.reject(new Error("second"))]),
    ).rejects.toThrow("first");
    expect(slowDone).toBe(true);
    await wait(20);
    expect(unhandled).toEqual([]);
  });
});
