import { seededRandom } from "../random.js";
import { blockCoverage, type FunctionBlocks, isCodeUnderTest } from "./coverage.js";
import { mutate, randomInput } from "./mutate.js";
import type { FuzzTarget } from "./target.js";

/** Most inputs kept in memory during a run; past it new finds still count but are not mutated further. */
export const MAX_CORPUS_INPUTS = 4096;
/**
 * Mutated inputs run between two coverage readings. A reading costs about
 * 7 ms (V8 reports every script, node's own included), ten times a typical
 * run, so inputs run in batches and only a batch that reached a new block is
 * run again input by input to find which ones to keep.
 */
const BATCH_INPUTS = 16;

/** Options of {@link fuzz}. */
export interface FuzzOptions {
  target: FuzzTarget;
  /** Inputs to start from: the target's seeds and the corpus folder's files. */
  corpus: Buffer[];
  seed: number;
  /** Stop after this long (ms)... */
  durationMs: number;
  /** ...or after this many runs of mutated inputs, whichever comes first. */
  maxRuns?: number;
  /** Which scripts' blocks count (by URL); default: the engine's and the SDK's. */
  covers?: (url: string) => boolean;
  /** Called with each mutated input that reached new coverage (to save it). */
  onNewInput?: (input: Buffer) => void;
}

/** An input that broke an invariant, and what was thrown. */
export interface FuzzFailure {
  input: Buffer;
  error: unknown;
}

/** What a run did. */
export interface FuzzReport {
  target: string;
  seed: number;
  /** Mutated inputs run. */
  runs: number;
  /** Inputs that reached new coverage, starting corpus included. */
  corpusSize: number;
  /** Distinct blocks of the code under test reached by the starting corpus. */
  corpusBlocks: number;
  /** Distinct blocks reached by everything run. */
  blocks: number;
  features: number;
  elapsedMs: number;
  failure: FuzzFailure | null;
}

/**
 * A corpus input to mutate: newer ones more often (half the picks go to the
 * newest quarter), since an input that just reached new code is where the
 * code behind it is found.
 */
function pickParent(corpus: readonly Buffer[], random: () => number): Buffer {
  const fromNewest = Math.floor(corpus.length * random() ** 2);
  return corpus[corpus.length - 1 - fromNewest] as Buffer;
}

/** Runs one input; the failure, or null when its invariants held. */
async function attempt(target: FuzzTarget, input: Buffer): Promise<FuzzFailure | null> {
  try {
    await target.run(input);
    return null;
  } catch (error) {
    return { input, error };
  }
}

/** Seen blocks and features of one run of the fuzzer. */
class CoverageMap {
  /** Block starts learned per function (see FunctionBlocks). */
  readonly known = new Map<string, FunctionBlocks>();
  readonly blocks = new Set<string>();
  readonly features = new Set<string>();

  /** Whether a run reached a block never reached before (without adding it). */
  hasNewBlock(run: { blocks: string[] }): boolean {
    return run.blocks.some((b) => !this.blocks.has(b));
  }

  /** Adds one run's coverage; true when it reached anything new. */
  add(run: { blocks: string[]; features: string[] }): boolean {
    let fresh = false;
    for (const b of run.blocks) this.blocks.add(b);
    for (const f of run.features) {
      if (!this.features.has(f)) {
        this.features.add(f);
        fresh = true;
      }
    }
    return fresh;
  }
}

/**
 * Coverage-guided fuzzing of one target: runs the starting corpus, then
 * mutates inputs picked from the corpus and keeps those that reach a block
 * (or a block's hit-count bucket) no input reached before. Stops at the first
 * failure, at the time limit or at the run limit. Deterministic for a seed up
 * to timing (the time limit decides how many runs there are).
 */
export async function fuzz(options: FuzzOptions): Promise<FuzzReport> {
  const { target } = options;
  const random = seededRandom(options.seed);
  const coverage = await blockCoverage();
  const seen = new CoverageMap();
  const corpus: Buffer[] = [];
  const started = Date.now();
  let runs = 0;
  let failure: FuzzFailure | null = null;
  const covers = options.covers ?? isCodeUnderTest;
  await coverage.take(covers, seen.known);
  for (const input of options.corpus) {
    failure = await attempt(target, input);
    seen.add(await coverage.take(covers, seen.known));
    corpus.push(input);
    if (failure) break;
  }
  const corpusBlocks = seen.blocks.size;
  const maxRuns = options.maxRuns ?? Number.POSITIVE_INFINITY;
  if (corpus.length === 0) corpus.push(Buffer.alloc(0));
  while (!failure && runs < maxRuns && Date.now() - started < options.durationMs) {
    const batch: Buffer[] = [];
    while (batch.length < BATCH_INPUTS && runs < maxRuns && !failure) {
      const input = mutate(pickParent(corpus, random), { random, maxLen: target.maxLen, dictionary: target.dictionary, corpus });
      failure = await attempt(target, input);
      runs++;
      batch.push(input);
    }
    if (failure || !seen.hasNewBlock(await coverage.take(covers, seen.known))) continue;
    for (const input of batch) {
      await attempt(target, input);
      if (!seen.add(await coverage.take(covers, seen.known))) continue;
      if (corpus.length < MAX_CORPUS_INPUTS) corpus.push(input);
      options.onNewInput?.(input);
    }
  }
  return {
    target: target.name,
    seed: options.seed,
    runs,
    corpusSize: corpus.length,
    corpusBlocks,
    blocks: seen.blocks.size,
    features: seen.features.size,
    elapsedMs: Date.now() - started,
    failure,
  };
}

/** Blocks reached by `inputs` (each run once), and the first failure among them. */
export async function measure(
  target: FuzzTarget,
  inputs: Buffer[],
  covers: (url: string) => boolean = isCodeUnderTest,
): Promise<{ blocks: number; failure: FuzzFailure | null }> {
  const coverage = await blockCoverage();
  const seen = new CoverageMap();
  await coverage.take(covers, seen.known);
  let failure: FuzzFailure | null = null;
  for (const input of inputs) {
    failure ??= await attempt(target, input);
    seen.add(await coverage.take(covers, seen.known));
  }
  return { blocks: seen.blocks.size, failure };
}

/** `count` random inputs (the baseline for coverage figures: what blind fuzzing reaches). */
export function randomInputs(seed: number, count: number, maxLen: number): Buffer[] {
  const random = seededRandom(seed);
  return Array.from({ length: count }, () => randomInput(random, maxLen));
}

/**
 * The inputs worth keeping: smallest first, each that reaches a feature the
 * ones before it did not (what `npm run fuzz -- --merge` writes back).
 */
export async function distil(target: FuzzTarget, inputs: Buffer[]): Promise<Buffer[]> {
  const coverage = await blockCoverage();
  const seen = new CoverageMap();
  const kept: Buffer[] = [];
  await coverage.take(isCodeUnderTest, seen.known);
  for (const input of [...inputs].sort((a, b) => a.length - b.length || Buffer.compare(a, b))) {
    await attempt(target, input);
    if (seen.add(await coverage.take(isCodeUnderTest, seen.known))) kept.push(input);
  }
  return kept;
}
