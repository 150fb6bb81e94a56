// check-engine-errors.mjs fails on plain errors and Error casts in engine code and lets
// typed errors, tests and the allowlist through (node --test scripts/check-engine-errors.test.mjs;
// run by `npm run lint`).

import assert from "node:assert/strict";
import { describe, test } from "node:test";
import { checkSource, isChecked } from "./check-engine-errors.mjs";

const FILE = "packages/engine/src/cluster/x.ts";

/** `line: message-start` of each violation in `text`. */
function found(text) {
  return checkSource(FILE, text).map((v) => `${v.line}: ${v.message.split(":")[0]}`);
}

describe("check-engine-errors", () => {
  test("finds new Error, Error() and casts to Error with their lines", () => {
    const text = [
      'throw new Error("a");',
      'const e = Error("b");',
      "try { f(); } catch (error) {",
      "  log((error as Error).message);",
      "  log((<Error>error).message);",
      "}",
    ].join("\n");
    assert.deepEqual(found(text), ["1: plain new Error(...)", "2: plain Error(...)", "4: cast to Error", "5: cast to Error"]);
  });

  test("typed errors, messageOf, other casts, comments and strings pass", () => {
    const text = [
      'throw new KeelsonError({ code: "INTERNAL", message: "x" });',
      "log(messageOf(error));",
      '// throw new Error("in a comment"); (error as Error).message',
      'const s = "new Error( and (error as Error)";',
      "const t = `also new Error( in a template`;",
      'if ((error as NodeJS.ErrnoException).code === "EPERM") return;',
      "class MyError extends Error {}",
    ].join("\n");
    assert.deepEqual(found(text), []);
  });

  test("checks engine sources only: not tests, other packages or the allowlist", () => {
    assert.equal(isChecked("packages/engine/src/store/pool.ts"), true);
    assert.equal(isChecked("packages/engine/src/store/pool.test.ts"), false);
    assert.equal(isChecked("packages/engine/test/cluster/cluster.test.ts"), false);
    assert.equal(isChecked("packages/sdk/src/client.ts"), false);
    assert.equal(isChecked("packages/engine/src/target/catalog.ts"), true);
    assert.equal(isChecked("packages/engine/src/target/catalog.ts", ["packages/engine/src/target/"]), false);
    assert.equal(isChecked("packages/engine/src/replication/rebuild.ts", ["packages/engine/src/replication/rebuild.ts"]), false);
    assert.equal(isChecked("packages/engine/src/replication/replica-client.ts"), true);
  });
});
