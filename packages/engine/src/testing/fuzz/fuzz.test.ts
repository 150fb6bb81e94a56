import { describe, expect, it } from "vitest";
import { testSeed } from "../random.js";
import { corpusName, readCorpus } from "./corpus.js";
import { fuzz, measure, randomInputs } from "./fuzzer.js";
import { TARGETS } from "./targets/index.js";

/** Fuzzing time per target in `npm test` (three targets: 45 s in all); `npm run fuzz` runs longer. */
const FUZZ_MS_PER_TARGET = 15_000;

describe.each([...TARGETS.values()])("fuzz target $name", (target) => {
  it("replays the kept corpus (seeds and fuzz/corpus files): every invariant holds, and it reaches more blocks than as many random inputs", async () => {
    const corpus = [...target.seeds(), ...readCorpus(target.name)];
    const kept = await measure(target, corpus);
    if (kept.failure) console.error(`${target.name}: corpus input ${corpusName(kept.failure.input)} broke an invariant`);
    expect(kept.failure?.error ?? null).toBeNull();
    const random = await measure(target, randomInputs(1, corpus.length, target.maxLen));
    console.log(
      `${target.name}: ${corpus.length} corpus inputs reach ${kept.blocks} blocks, as many random inputs ${random.blocks}`,
    );
    expect(kept.blocks).toBeGreaterThan(random.blocks);
  });

  it(`coverage-guided fuzzing for ${FUZZ_MS_PER_TARGET / 1000} s from the corpus: no input breaks an invariant`, async () => {
    const seed = testSeed();
    const corpus = [...target.seeds(), ...readCorpus(target.name)];
    const report = await fuzz({ target, corpus, seed, durationMs: FUZZ_MS_PER_TARGET });
    const { failure, ...figures } = report;
    console.log(JSON.stringify(figures));
    if (failure) {
      // Reproduce with KEELSON_SEED, or keep the input as a regression test next to the code it broke.
      console.error(`${target.name} (KEELSON_SEED=${seed}) failing input: ${failure.input.toString("hex")}`);
    }
    expect(failure?.error ?? null).toBeNull();
    expect(report.runs).toBeGreaterThan(0);
  });
});
