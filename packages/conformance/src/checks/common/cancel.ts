// Waiting and cancelling, as every check family does them: a run interrupted
// (SIGINT/SIGTERM) stops waiting at once and unwinds with CANCELLED.

import { ConformanceError } from "../../errors.js";

/**
 * Resolves after `ms`, or at once when `signal` aborts; never rejects, so a
 * caller in the middle of a phase unwinds through its own `finally` (follow
 * it with {@link throwIfCancelled} to stop there). Removes its abort listener
 * either way, so a long run of sleeps does not pile listeners on the signal.
 */
export function sleep(ms: number, signal: AbortSignal): Promise<void> {
  return new Promise((resolve) => {
    if (signal.aborted) return resolve();
    const done = () => {
      clearTimeout(timer);
      signal.removeEventListener("abort", done);
      resolve();
    };
    const timer = setTimeout(done, ms);
    signal.addEventListener("abort", done, { once: true });
  });
}

/** Throws CANCELLED once the run is interrupted. */
export function throwIfCancelled(signal: AbortSignal): void {
  if (signal.aborted) throw new ConformanceError({ code: "CANCELLED", message: "the run was interrupted" });
}
