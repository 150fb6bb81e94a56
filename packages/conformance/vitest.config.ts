import { defineConfig } from "vitest/config";

/** Fails a CI run in which any test was skipped or todo (issue 13); a path, since it is shared by every package. */
const SKIP_GUARD = "../../scripts/vitest-skip-guard.mjs";

export default defineConfig({
  test: {
    include: ["src/**/*.test.ts", "test/**/*.test.ts"],
    testTimeout: 300_000,
    hookTimeout: 120_000,
    // Checks start clusters and fio; two cores do not run two of them at once well.
    maxWorkers: 1,
    reporters: ["default", "json", SKIP_GUARD],
    outputFile: { json: ".vitest-results.json" },
  },
});
