#!/usr/bin/env node
// Runs the data-path tests again with every pool's blocks on O_DIRECT
// (KEELSON_DIRECT_IO=1), as test:threadpool runs them on the thread pool.
// O_DIRECT needs the io_uring engine: where it cannot load, the run is
// skipped with a loud line, and in CI (CI set) that skip is a failure.
//
//   node scripts/test-direct.mjs [vitest args]

import { spawnSync } from "node:child_process";
import { uringAddon } from "../dist/device-io/uring-addon.js";

const FILES = [
  "src/store",
  "src/device-io",
  "test/durability.test.ts",
  "test/io-model.test.ts",
  "test/power-loss.test.ts",
  "test/malformed-input.test.ts",
  "test/snapshots.test.ts",
  "test/block-status.test.ts",
];

const { addon, why } = uringAddon();
if (!addon) {
  const line = `!!!!!!!! data-path tests on O_DIRECT not run: ${why} !!!!!!!!`;
  console.error(line);
  process.exit(process.env.CI ? 1 : 0);
}
const r = spawnSync(
  "npx",
  ["vitest", "run", ...FILES, "--outputFile.json=.vitest-results-direct.json", ...process.argv.slice(2)],
  { stdio: "inherit", env: { ...process.env, KEELSON_DIRECT_IO: "1" } },
);
process.exit(r.status ?? 1);
