/**
 * A fuzz target: feeds one input to the code under test and checks the
 * invariants that must hold for any input. `run` resolves when they hold and
 * rejects (an AssertionError, or whatever escaped the code) when one is broken.
 */
export interface FuzzTarget {
  readonly name: string;
  /** Longest input the fuzzer makes for this target. */
  readonly maxLen: number;
  /** Tokens of the format for the dictionary mutation. */
  readonly dictionary: readonly Buffer[];
  /** Valid inputs the corpus starts from (also kept as files in the corpus folder). */
  seeds(): Buffer[];
  run(input: Buffer): Promise<void>;
}

/** Waits for one turn of the event loop (lets socket events and callbacks queued with setImmediate run). */
export function tick(): Promise<void> {
  return new Promise((resolve) => setImmediate(resolve));
}

/** Resolves with `p`, or rejects with an AssertionError-like message when it takes longer than `ms` (a hang). */
export async function within<T>(p: Promise<T>, ms: number, what: string, fail: (message: string) => never): Promise<T> {
  let timer: NodeJS.Timeout | undefined;
  const timeout = new Promise<"timeout">((resolve) => {
    timer = setTimeout(() => resolve("timeout"), ms);
  });
  try {
    const result = await Promise.race([p, timeout]);
    if (result === "timeout") fail(`${what} did not finish within ${ms} ms`);
    return result as T;
  } finally {
    clearTimeout(timer);
  }
}
