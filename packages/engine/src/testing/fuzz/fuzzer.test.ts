import { describe, expect, it } from "vitest";
import { fuzz, randomInputs } from "./fuzzer.js";
import { plantedParser } from "./planted-parser.js";
import type { FuzzTarget } from "./target.js";

const planted: FuzzTarget = {
  name: "planted",
  maxLen: 64,
  // As the NBD targets' dictionaries: the magic and every option code.
  dictionary: [Buffer.from("IHAVEOPT"), ...Array.from({ length: 11 }, (_, i) => Buffer.from([0, 0, 0, i + 1]))],
  seeds: () => [Buffer.from("IHAVEOPT\0\0\0\x03\0\0\0\0", "latin1")],
  run: async (input) => plantedParser(input),
};

/** Only the planted parser's blocks count (not those of the test code around it). */
const thisFile = (url: string) => url.includes("planted-parser");

describe("the fuzzer", () => {
  // First: once V8 has optimized the parser (after the long run below) its block counts can differ from the interpreter's.
  it("is deterministic for a seed: the same runs give the same corpus", async () => {
    const once = await fuzz({
      target: planted,
      corpus: [Buffer.alloc(4)],
      seed: 7,
      durationMs: 60_000,
      maxRuns: 300,
      covers: thisFile,
    });
    const again = await fuzz({
      target: planted,
      corpus: [Buffer.alloc(4)],
      seed: 7,
      durationMs: 60_000,
      maxRuns: 300,
      covers: thisFile,
    });
    expect([again.runs, again.corpusSize, again.features]).toEqual([once.runs, once.corpusSize, once.features]);
  });

  it("finds a bug behind a magic, an option code and a length within a bounded run; random inputs do not", async () => {
    const report = await fuzz({
      target: planted,
      corpus: planted.seeds(),
      seed: 42,
      durationMs: 60_000,
      maxRuns: 50_000,
      covers: thisFile,
    });
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
});
