// A vitest reporter that fails a CI run in which any test was skipped or left
// todo (issue 13): under CI a test that cannot run is a failure, so neither a
// host that lacks a tool (`canRun` throws there already) nor an `it.skip`,
// `describe.skipIf`, `it.todo` or `t.skip()` added later can turn a test into a
// silent pass. Outside CI it lists what was skipped and changes nothing.
//
// Every package's vitest.config.ts names it in `reporters`, by path.

/**
 * Whether a value of the `CI` environment variable means "this is a CI run":
 * any non-empty value except `false`, `0` and `no` (any case, spaces ignored).
 * Kept identical to `isCiValue` in packages/engine/test/helpers/env.ts and
 * packages/conformance/src/testing/env.ts.
 * @param {string | undefined} value
 * @returns {boolean}
 */
export function isCiValue(value) {
  const v = (value ?? "").trim().toLowerCase();
  return v !== "" && v !== "false" && v !== "0" && v !== "no";
}

/**
 * The skipped and todo tests of a run, as `file > suite > test (mode: note)` lines.
 * @param {ReadonlyArray<import("vitest/node").TestModule>} testModules
 * @returns {string[]}
 */
export function skippedTests(testModules) {
  const lines = [];
  for (const mod of testModules) {
    for (const test of mod.children.allTests()) {
      const result = test.result();
      if (result.state !== "skipped") continue;
      // A test whose mode is still "run" was skipped from inside, by `t.skip()`.
      const how = test.options.mode === "run" ? "t.skip()" : test.options.mode;
      const note = result.note ? `: ${result.note}` : "";
      lines.push(`${mod.moduleId} > ${test.fullName} (${how}${note})`);
    }
  }
  return lines;
}

export default class SkipGuardReporter {
  /** @param {{ ci?: boolean }} [options] `ci` overrides the CI variable (for the guard's own tests). */
  constructor(options = {}) {
    /** Whether a skip fails the run. */
    this.ci = options.ci ?? isCiValue(process.env.CI);
  }

  /** @param {import("vitest/node").Vitest} vitest */
  onInit(vitest) {
    /** A run filtered by test name (`-t`) skips the rest on purpose; CI runs everything. */
    this.filtered = Boolean(vitest.config.testNamePattern);
  }

  /**
   * @param {ReadonlyArray<import("vitest/node").TestModule>} testModules
   * @param {unknown} _errors
   * @param {string} reason
   */
  onTestRunEnd(testModules, _errors, reason) {
    if (reason === "interrupted") return;
    const skipped = skippedTests(testModules);
    if (skipped.length === 0) return;
    const list = skipped.map((line) => `  ${line}`).join("\n");
    if (!this.ci || this.filtered) {
      console.warn(`\n${skipped.length} test(s) skipped or todo (a failure under CI):\n${list}\n`);
      return;
    }
    console.error(
      `\nCI=${JSON.stringify(process.env.CI ?? "")}: ${skipped.length} test(s) skipped or todo, which CI does not allow:\n${list}\n`,
    );
    // vitest only ever raises the exit code, so this survives to the process's exit.
    process.exitCode = 1;
  }
}
