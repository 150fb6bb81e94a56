/** How often {@link waitFor} checks its condition unless told otherwise. */
export const WAIT_INTERVAL_MS = 50;

/**
 * Waits for a condition instead of sleeping a fixed time and hoping it held:
 * calls `check` until it returns a value other than `undefined`, `null` or
 * `false` and resolves with that value. A `check` that throws counts as not
 * yet (its message is kept for the failure). Gives up after `timeoutMs` with
 * an error that says what was awaited, for how long, and the last answer.
 */
export async function waitFor<T>(
  check: () => T | undefined | null | false | Promise<T | undefined | null | false>,
  options: { what: string; timeoutMs: number; intervalMs?: number },
): Promise<T> {
  const { what, timeoutMs, intervalMs = WAIT_INTERVAL_MS } = options;
  const started = Date.now();
  let last = "no answer yet";
  for (;;) {
    try {
      const value = await check();
      if (value !== undefined && value !== null && value !== false) return value;
      last = `last answer ${String(value)}`;
    } catch (e) {
      last = `last attempt failed: ${e instanceof Error ? e.message : String(e)}`;
    }
    if (Date.now() - started >= timeoutMs) {
      throw new Error(`gave up after ${Date.now() - started} ms waiting for ${what} (${last})`);
    }
    await new Promise((r) => setTimeout(r, intervalMs));
  }
}
