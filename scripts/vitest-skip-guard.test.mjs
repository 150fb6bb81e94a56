// Tests of scripts/vitest-skip-guard.mjs: the CI values it honours, and real
// vitest runs of a throwaway test file with the reporter, under CI and not.
import assert from "node:assert/strict";
import { spawnSync } from "node:child_process";
import fs from "node:fs";
import os from "node:os";
import path from "node:path";
import { after, describe, it } from "node:test";
import { fileURLToPath } from "node:url";
import { isCiValue } from "./vitest-skip-guard.mjs";

const ROOT = path.dirname(path.dirname(fileURLToPath(import.meta.url)));
const GUARD = path.join(ROOT, "scripts", "vitest-skip-guard.mjs");
const VITEST = path.join(ROOT, "node_modules", "vitest", "vitest.mjs");

describe("isCiValue", () => {
  const cases = [
    ["true", true],
    ["1", true],
    ["yes", true],
    ["TRUE", true],
    ["github-actions", true],
    [undefined, false],
    ["", false],
    ["  ", false],
    ["false", false],
    ["FALSE", false],
    ["0", false],
    ["no", false],
  ];
  for (const [value, expected] of cases) {
    it(`CI=${JSON.stringify(value)} -> ${expected}`, () => assert.equal(isCiValue(value), expected));
  }
});

describe("a vitest run with the guard", () => {
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), "keelson-skip-guard-"));
  after(() => fs.rmSync(dir, { recursive: true, force: true }));

  /** Runs vitest on one test file holding `body`; the exit status and output. */
  function run(name, body, ci, extra = []) {
    const root = path.join(dir, name);
    fs.mkdirSync(root);
    fs.writeFileSync(path.join(root, "x.test.mjs"), `import { describe, it } from "vitest";\n${body}\n`);
    const env = { ...process.env };
    delete env.CI;
    if (ci !== undefined) env.CI = ci;
    const r = spawnSync(
      process.execPath,
      [VITEST, "run", "--root", root, "--reporter=default", `--reporter=${GUARD}`, ...extra],
      { env, encoding: "utf8", timeout: 60_000 },
    );
    return { status: r.status, output: `${r.stdout}${r.stderr}` };
  }

  const SKIPPING = [
    'it("runs", () => {});',
    'it.skip("a skipped test", () => {});',
    'it.todo("a todo test");',
    'it("skips itself", (t) => { t.skip("no tool"); });',
    'describe.skipIf(true)("a skipped suite", () => { it("inside", () => {}); });',
  ].join("\n");

  it("CI=1: every kind of skip is listed and the run fails", () => {
    const r = run("ci", SKIPPING, "1");
    assert.equal(r.status, 1, r.output);
    for (const what of ["a skipped test (skip)", "a todo test (todo)", "skips itself (t.skip(): no tool)", "inside (skip)"]) {
      assert.match(r.output, new RegExp(what.replace(/[()]/g, "\\$&")));
    }
    assert.match(r.output, /4 test\(s\) skipped or todo, which CI does not allow/);
  });

  it("CI unset or CI=false: the skips are listed and the run passes", () => {
    for (const [name, ci] of [
      ["unset", undefined],
      ["false", "false"],
    ]) {
      const r = run(name, SKIPPING, ci);
      assert.equal(r.status, 0, r.output);
      assert.match(r.output, /4 test\(s\) skipped or todo \(a failure under CI\)/);
    }
  });

  it("CI=true with nothing skipped: the run passes", () => {
    const r = run("clean", 'it("runs", () => {});', "true");
    assert.equal(r.status, 0, r.output);
    assert.doesNotMatch(r.output, /skipped or todo/);
  });

  it("CI=true filtered by name (-t): what the filter left out does not fail the run", () => {
    const r = run("filtered", 'it("wanted", () => {});\nit("other", () => {});', "true", ["-t", "wanted"]);
    assert.equal(r.status, 0, r.output);
  });

  it("a failing test still fails the run outside CI (the guard only raises the exit status)", () => {
    const r = run("failing", 'it("fails", () => { throw new Error("boom"); });', undefined);
    assert.equal(r.status, 1, r.output);
  });
});
