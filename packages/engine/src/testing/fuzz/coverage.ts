import { Session } from "node:inspector/promises";

/**
 * Block coverage of the code under test, from V8 itself (the inspector's
 * precise coverage, the same data `c8` and vitest's v8 provider read), so the
 * fuzzer needs no instrumenting build step or native addon.
 */

/** Scripts whose blocks count: the engine and the SDK (its protobuf decoders), not the fuzzer, tests or dependencies. */
export function isCodeUnderTest(url: string): boolean {
  if (!/\/packages\/(engine|sdk)\//.test(url)) return false;
  return !url.includes("/node_modules/") && !url.includes("/testing/") && !url.includes(".test.");
}

/**
 * Hit counts are bucketed as AFL does (1, 2, 3, 4-7, 8-15, 16-31, 32-127,
 * 128+): a loop that runs a new number of times is a new feature, but 9 and
 * 10 iterations are the same one.
 */
function bucketOf(count: number): number {
  if (count <= 3) return count;
  if (count < 8) return 4;
  if (count < 16) return 5;
  if (count < 32) return 6;
  if (count < 128) return 7;
  return 8;
}

/** What one run reached: block keys (`url#start-end`) and features (a block with its hit-count bucket). */
export interface RunCoverage {
  blocks: string[];
  features: string[];
}

/**
 * Block starts of one function seen so far, sorted. V8 reports a nested
 * block only where its count differs from its parent's (it merges the rest),
 * so one run's ranges do not list every block: a block is known from the run
 * where it was reported and judged in every later run by the innermost range
 * around it.
 */
export class FunctionBlocks {
  readonly #offsets = new Set<number>();
  #sorted: number[] = [];

  learn(ranges: readonly { startOffset: number; endOffset: number }[]): void {
    const before = this.#offsets.size;
    for (const r of ranges) {
      this.#offsets.add(r.startOffset);
      this.#offsets.add(r.endOffset);
    }
    if (this.#offsets.size !== before) this.#sorted = [...this.#offsets].sort((x, y) => x - y);
  }

  get sorted(): readonly number[] {
    return this.#sorted;
  }
}

/** The count of the innermost range around `offset` (ranges come parent first, sorted by start). */
function countAt(ranges: readonly { startOffset: number; endOffset: number; count: number }[], offset: number): number {
  let count = 0;
  for (const r of ranges) {
    if (r.startOffset > offset) break;
    if (offset < r.endOffset) count = r.count;
  }
  return count;
}

/**
 * A session on this thread's own V8 isolate with precise, block-level
 * coverage turned on. There is one per thread, started once and never
 * stopped: after V8's precise coverage is stopped and started again it
 * reports about half the blocks it did the first time (measured: 52, then 25
 * for the same inputs), so a second session would undercount.
 */
export class BlockCoverage {
  readonly #session = new Session();

  async start(): Promise<void> {
    this.#session.connect();
    await this.#session.post("Profiler.enable");
    // callCount + detailed: per-block counts, reset by every takePreciseCoverage (so each take is one run's).
    await this.#session.post("Profiler.startPreciseCoverage", { callCount: true, detailed: true });
  }

  /**
   * Blocks of scripts `covers` accepts run since the last call (or since
   * start); `known` holds the blocks learned so far (one map per fuzzing
   * session, so a session's result depends only on its own runs).
   */
  async take(covers: (url: string) => boolean, known: Map<string, FunctionBlocks>): Promise<RunCoverage> {
    const { result } = await this.#session.post("Profiler.takePreciseCoverage");
    const blocks: string[] = [];
    const features: string[] = [];
    for (const script of result) {
      if (!covers(script.url)) continue;
      for (const fn of script.functions) {
        const whole = fn.ranges[0];
        if (!whole) continue;
        const id = `${script.url}#${whole.startOffset}`;
        let fnBlocks = known.get(id);
        if (!fnBlocks) {
          fnBlocks = new FunctionBlocks();
          known.set(id, fnBlocks);
        }
        fnBlocks.learn(fn.ranges);
        if (whole.count === 0) continue;
        for (const offset of fnBlocks.sorted) {
          if (offset < whole.startOffset || offset >= whole.endOffset) continue;
          const count = countAt(fn.ranges, offset);
          if (count === 0) continue;
          const key = `${id}:${offset}`;
          blocks.push(key);
          features.push(`${key}@${bucketOf(count)}`);
        }
      }
    }
    return { blocks, features };
  }
}

let shared: Promise<BlockCoverage> | null = null;

/** This thread's coverage session, started on first use. */
export function blockCoverage(): Promise<BlockCoverage> {
  shared ??= (async () => {
    const c = new BlockCoverage();
    await c.start();
    return c;
  })();
  return shared;
}
