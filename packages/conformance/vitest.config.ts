import { defineConfig } from "vitest/config";

export default defineConfig({
  test: {
    include: ["src/**/*.test.ts", "test/**/*.test.ts"],
    testTimeout: 300_000,
    hookTimeout: 120_000,
    // Checks start clusters and fio; two cores do not run two of them at once well.
    maxWorkers: 1,
    reporters: ["default", "json"],
    outputFile: { json: ".vitest-results.json" },
  },
});
