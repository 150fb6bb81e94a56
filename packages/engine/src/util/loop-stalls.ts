import { monitorEventLoopDelay } from "node:perf_hooks";
import type { Logger } from "./log.js";

/** How often the event loop's delay is sampled and judged. */
const CHECK_INTERVAL_MS = 1_000;
/** A stall at least this long is logged: it is a third of the shortest lease a cluster uses, and delays every reply. */
export const LOOP_STALL_WARN_MS = 500;

/**
 * Logs a warning whenever the event loop was blocked for LOOP_STALL_WARN_MS
 * or more: a stalled loop sends no lease keepalives and answers no I/O, so a
 * node that drops out of the cluster should say when it stalled. Returns the
 * function that stops it.
 */
export function watchLoopStalls(log: Logger, fields: Record<string, unknown>): () => void {
  const histogram = monitorEventLoopDelay({ resolution: 20 });
  histogram.enable();
  const timer = setInterval(() => {
    const maxMs = histogram.max / 1e6;
    histogram.reset();
    if (maxMs >= LOOP_STALL_WARN_MS) log.log("warn", "event loop stalled", { ...fields, stallMs: Math.round(maxMs) });
  }, CHECK_INTERVAL_MS);
  timer.unref();
  return () => {
    clearInterval(timer);
    histogram.disable();
  };
}
