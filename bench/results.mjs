// Where a bench script leaves its run's figures: bench/results/KIND-TIMESTAMP.json (not committed).
import fs from "node:fs";
import path from "node:path";
import { fileURLToPath } from "node:url";

const ROOT = path.dirname(path.dirname(fileURLToPath(import.meta.url)));

/** Writes `results` as JSON under bench/results/ and says where. */
export function saveResults(kind, results) {
  const out = path.join(ROOT, "bench", "results");
  fs.mkdirSync(out, { recursive: true });
  const file = path.join(out, `${kind}-${new Date().toISOString().replace(/[:.]/g, "-")}.json`);
  fs.writeFileSync(file, JSON.stringify(results, null, 2));
  console.log(`JSON: ${path.relative(ROOT, file)}`);
}
