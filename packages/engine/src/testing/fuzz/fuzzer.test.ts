import { describe, expect, it } from "vitest";
import { fuzz, randomInputs } from "./fuzzer.js";
import type { FuzzTarget } from "./target.js";

/**
 * A parser with a bug behind three nested conditions (a magic, an option code
 * and a length), the shape of the bugs the NBD targets hunt: blind random
 * inputs reach it about once in 2^96 tries, a coverage-guided search in a few
 * thousand runs because each condition met is a new block kept in the corpus.
 */
function plantedParser(input: Buffer): void {
  if (input.length < 16) return;
  if (input.toString("latin1", 0, 8) !== "IHAVEOPT") return;
  const option = input.readUInt32BE(8);
  if (option !== 9) return;
  const length = input.readUInt32BE(12);
  if (length === 7) throw new RangeError("planted bug: option 9 with 7 bytes");
}

const planted: FuzzTarget = {
  name: "planted",
  maxLen: 64,
  // As the NBD targets' dictionaries: the magic and every option code.
  dictionary: [Buffer.from("IHAVEOPT"), ...Array.from({ length: 11 }, (_, i) => Buffer.from([0, 0, 0, i + 1]))],
  seeds: () => [Buffer.from("IHAVEOPT\0\0\0\x03\0\0\0\0", "latin1")],
  run: async (input) => plantedParser(input),
};

/** Only this file's blocks count. */
const thisFile = (url: string) => url.includes("fuzzer.test");

describe("the fuzzer", () => {
  it("finds a bug behind a magic, an option code and a length within a bounded run; random inputs do not", async () => {
    const report = await fuzz({ target: planted, corpus: planted.seeds(), seed: 42, durationMs: 60_000, maxRuns: 50_000, covers: thisFile });
    console.log(`planted bug found after ${report.runs} runs, ${report.elapsedMs} ms, corpus of ${report.corpusSize}`);
    expect(String(report.failure?.error)).toContain("planted bug");
    expect(report.failure?.input.readUInt32BE(8)).toBe(9);
    let randomFound = false;
    for (const input of randomInputs(42, report.runs, planted.maxLen)) {
      try {
        plantedParser(input);
      } catch {
        randomFound = true;
      }
    }
    expect(randomFound).toBe(false);
  });

  it("is deterministic for a seed: the same runs give the same corpus", async () => {
    const once = await fuzz({ target: planted, corpus: [Buffer.alloc(4)], seed: 7, durationMs: 60_000, maxRuns: 300, covers: thisFile });
    const again = await fuzz({ target: planted, corpus: [Buffer.alloc(4)], seed: 7, durationMs: 60_000, maxRuns: 300, covers: thisFile });
    expect([again.runs, again.corpusSize, again.features]).toEqual([once.runs, once.corpusSize, once.features]);
  });
});
