import { defineConfig } from "vitest/config";

/** Fails a CI run in which any test was skipped or todo (issue 13); a path, since it is shared by every package. */
const SKIP_GUARD = "../../scripts/vitest-skip-guard.mjs";

export default defineConfig({
  test: {
    include: ["src/**/*.test.ts", "test/**/*.test.ts"],
    testTimeout: 120_000,
    hookTimeout: 60_000,
    // Multi-process tests start daemons and real clients; two cores do not run more than two at once well.
    maxWorkers: 2,
    reporters: ["default", "json", SKIP_GUARD],
    outputFile: { json: ".vitest-results.json" },
  },
});
