import fs from "node:fs";
import path from "node:path";
import { parseArgs } from "node:util";
import { corpusDir, readCorpus, saveInput } from "./corpus.js";
import { distil, fuzz, measure, randomInputs } from "./fuzzer.js";
import { TARGETS } from "./targets/index.js";

const USAGE = `usage: npm run fuzz -w @keelson/engine -- --target <name|all> [--seconds 60] [--runs N] [--seed N] [--save] [--compare]
  --target   ${[...TARGETS.keys()].join(", ")}, or all
  --seconds  how long to fuzz each target (default 60)
  --runs     stop after this many mutated inputs
  --seed     PRNG seed (default: random, printed)
  --save     write inputs that reach new coverage into fuzz/corpus/<target>/
  --compare  print blocks reached by the kept corpus vs by as many random inputs, then fuzz
  --merge    after fuzzing, rewrite fuzz/corpus/<target>/ to the smallest inputs that keep its coverage`;

async function main(): Promise<number> {
  const { values } = parseArgs({
    options: {
      target: { type: "string" },
      seconds: { type: "string", default: "60" },
      runs: { type: "string" },
      seed: { type: "string" },
      save: { type: "boolean", default: false },
      compare: { type: "boolean", default: false },
      merge: { type: "boolean", default: false },
      help: { type: "boolean", default: false },
    },
  });
  const names = values.target === "all" ? [...TARGETS.keys()] : values.target ? [values.target] : [];
  const targets = names.map((n) => TARGETS.get(n));
  if (values.help || targets.length === 0 || targets.some((t) => t === undefined)) {
    console.error(USAGE);
    return 2;
  }
  const seed = values.seed ? Number(values.seed) : Math.floor(Math.random() * 2 ** 31);
  let failed = false;
  for (const target of targets) {
    if (!target) continue;
    const corpus = [...target.seeds(), ...readCorpus(target.name)];
    if (values.compare) {
      const kept = await measure(target, corpus);
      const random = await measure(target, randomInputs(seed, corpus.length, target.maxLen));
      console.log(
        `${target.name}: ${corpus.length} corpus inputs reach ${kept.blocks} blocks; as many random inputs reach ${random.blocks}`,
      );
    }
    const dir = corpusDir(target.name);
    let saved = 0;
    const report = await fuzz({
      target,
      corpus,
      seed,
      durationMs: Number(values.seconds) * 1000,
      ...(values.runs ? { maxRuns: Number(values.runs) } : {}),
      onNewInput: values.save
        ? (input) => {
            saveInput(dir, input);
            saved++;
          }
        : undefined,
    });
    const { failure, ...figures } = report;
    console.log(JSON.stringify({ ...figures, saved }));
    if (values.merge && !failure) {
      const files = readCorpus(target.name);
      const kept = await distil(target, [...target.seeds(), ...files]);
      fs.rmSync(dir, { recursive: true, force: true });
      for (const input of kept) saveInput(dir, input);
      console.log(`${target.name}: corpus merged from ${files.length} files to ${kept.length}`);
    }
    if (failure) {
      failed = true;
      const file = saveInput(path.join(dir, "..", "..", "crashes", target.name), failure.input);
      console.error(`${target.name}: invariant broken by ${file} (seed ${seed}):`, failure.error);
    }
  }
  return failed ? 1 : 0;
}

process.exitCode = await main();
