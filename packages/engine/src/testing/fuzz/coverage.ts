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
 * A session on this thread's own V8 isolate with precise, block-level
 * coverage turned on. There is one per thread, started once and never
 * stopped: after V8's precise coverage is stopped and started again it
 * reports about half the blocks it did the first time (measured: 52, then 25
 * for the same inputs), so a second session would undercount.
 */
class BlockCoverage {
  readonly #session = new Session();

  async start(): Promise<void> {
    this.#session.connect();
    await this.#session.post("Profiler.enable");
    // callCount + detailed: per-block counts, reset by every takePreciseCoverage (so each take is one run's).
    await this.#session.post("Profiler.startPreciseCoverage", { callCount: true, detailed: true });
  }

  /** Blocks run since the last call (or since start). */
  async take(): Promise<RunCoverage> {
    const { result } = await this.#session.post("Profiler.takePreciseCoverage");
    const blocks: string[] = [];
    const features: string[] = [];
    for (const script of result) {
      if (!isCodeUnderTest(script.url)) continue;
      for (const fn of script.functions) {
        for (const r of fn.ranges) {
          if (r.count === 0) continue;
          const key = `${script.url}#${r.startOffset}-${r.endOffset}`;
          blocks.push(key);
          features.push(`${key}@${bucketOf(r.count)}`);
        }
      }
    }
    return { blocks, features };
  }
}

let shared: Promise<BlockCoverage> | null = null;

/** This thread's coverage session, started on first use. */
export function blockCoverage(): Promise<{ take(): Promise<RunCoverage> }> {
  shared ??= (async () => {
    const c = new BlockCoverage();
    await c.start();
    return c;
  })();
  return shared;
}
