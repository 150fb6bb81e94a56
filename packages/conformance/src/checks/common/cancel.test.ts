import { describe, expect, it } from "vitest";
import { sleep, throwIfCancelled } from "./cancel.js";

describe("sleep", () => {
  it("resolves after the time asked", async () => {
    const started = performance.now();
    await sleep(50, new AbortController().signal);
    expect(performance.now() - started).toBeGreaterThanOrEqual(45);
  });

  it("resolves at once when the run is interrupted, and leaves no listener on the signal", async () => {
    const controller = new AbortController();
    let listeners = 0;
    const signal = controller.signal;
    const add = signal.addEventListener.bind(signal);
    const remove = signal.removeEventListener.bind(signal);
    signal.addEventListener = ((...args: Parameters<typeof add>) => {
      listeners++;
      add(...args);
    }) as typeof signal.addEventListener;
    signal.removeEventListener = ((...args: Parameters<typeof remove>) => {
      listeners--;
      remove(...args);
    }) as typeof signal.removeEventListener;
    await sleep(1, signal);
    expect(listeners).toBe(0);
    const started = performance.now();
    const waiting = sleep(60_000, signal);
    controller.abort();
    await waiting;
    expect(performance.now() - started).toBeLessThan(10_000);
    expect(listeners).toBe(0);
    await sleep(60_000, signal);
  });
});

describe("throwIfCancelled", () => {
  it("throws CANCELLED once the signal aborted, nothing before", () => {
    const controller = new AbortController();
    expect(() => throwIfCancelled(controller.signal)).not.toThrow();
    controller.abort();
    expect(() => throwIfCancelled(controller.signal)).toThrow(expect.objectContaining({ code: "CANCELLED" }));
  });
});
