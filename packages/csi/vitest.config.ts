import { defineConfig } from "vitest/config";

/** Fails a CI run in which any test was skipped or todo; a path, since it is shared by every package. */
const SKIP_GUARD = "../../scripts/vitest-skip-guard.mjs";

export default defineConfig({
  test: {
    include: ["src/**/*.test.ts", "test/**/*.test.ts"],
    // One file at a time: the lifecycle test runs a 3-node cluster whose 3 s leases must not share 2 cores with another engine.
    fileParallelism: false,
    reporters: ["default", "json", SKIP_GUARD],
    outputFile: { json: ".vitest-results.json" },
  },
});
