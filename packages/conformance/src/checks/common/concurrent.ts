// Load kept running while a check does something else: floods beside a
// victim, writers under snapshot calls, readers under deletes.

/** What {@link alongside} resolves with. */
export interface AlongsideResult<T, L> {
  /** What the foreground resolved with. */
  value: T;
  /** What each load resolved with, in the order `start` returned them. */
  loads: L[];
}

/**
 * Starts the loads, runs `foreground` while they run, and settles only once
 * the foreground and every load have settled: nothing it started outlives it.
 *
 * Each load gets a rejection handler the moment `start` returns it, so a load
 * that fails while the foreground still runs is never an unhandled rejection
 * (Node would crash the CLI with it before any cleanup). The first failure
 * stops the rest: a load failing aborts the signal the foreground gets, the
 * foreground failing aborts the one the loads get (each stops early where it
 * honours its signal, and is awaited either way). Rejects with the first
 * failure, the one that stopped the others.
 */
export async function alongside<T, L>(
  start: (stop: AbortSignal) => readonly Promise<L>[],
  foreground: (loadFailed: AbortSignal) => Promise<T>,
): Promise<AlongsideResult<T, L>> {
  const stopLoads = new AbortController();
  const loadFailed = new AbortController();
  let first: { error: unknown } | undefined;
  // Handlers attach here, in the same turn the loads were made: none of them can reject unhandled.
  const loads = Promise.allSettled(
    start(stopLoads.signal).map((load) =>
      load.catch((error: unknown) => {
        first ??= { error };
        loadFailed.abort();
        stopLoads.abort();
        throw error;
      }),
    ),
  );
  let value: T | undefined;
  try {
    value = await foreground(loadFailed.signal);
  } catch (error) {
    first ??= { error };
    stopLoads.abort();
  }
  const settled = await loads;
  if (first !== undefined) throw first.error;
  return { value: value as T, loads: settled.map((s) => (s as PromiseFulfilledResult<L>).value) };
}

/**
 * `Promise.all` that waits for every promise before it rejects: on a failure
 * the others are still awaited, so no write or read of a batch is left in
 * flight while the caller cleans up (detaches, closes). Rejects with the
 * first failure in `promises`' order.
 */
export async function allSettledOrThrow<T>(promises: readonly Promise<T>[]): Promise<T[]> {
  const settled = await Promise.allSettled(promises);
  const values: T[] = [];
  for (const s of settled) {
    if (s.status === "rejected") throw s.reason;
    values.push(s.value);
  }
  return values;
}
