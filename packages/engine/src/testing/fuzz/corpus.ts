import { createHash } from "node:crypto";
import fs from "node:fs";
import path from "node:path";
import { fileURLToPath } from "node:url";

/** The kept corpus: `packages/engine/fuzz/corpus/<target>/`, one input per file named by its hash. */
export function corpusDir(target: string): string {
  // src/testing/fuzz and the CLI's build of it sit at the same depth under packages/engine.
  const engineRoot = path.resolve(path.dirname(fileURLToPath(import.meta.url)), "../../..");
  return path.join(engineRoot, "fuzz", "corpus", target);
}

/** The corpus files of `target`, in name order (empty when there are none). */
export function readCorpus(target: string): Buffer[] {
  const dir = corpusDir(target);
  if (!fs.existsSync(dir)) return [];
  return fs
    .readdirSync(dir)
    .filter((f) => !f.startsWith("."))
    .sort()
    .map((f) => fs.readFileSync(path.join(dir, f)));
}

/** The file name an input is kept under. */
export function corpusName(input: Buffer): string {
  return createHash("sha1").update(input).digest("hex").slice(0, 16);
}

/** Saves `input` into `dir` (idempotent: the name is the content's hash); returns its path. */
export function saveInput(dir: string, input: Buffer): string {
  fs.mkdirSync(dir, { recursive: true });
  const file = path.join(dir, corpusName(input));
  if (!fs.existsSync(file)) fs.writeFileSync(file, input);
  return file;
}
