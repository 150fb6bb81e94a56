import fs from "node:fs";
import path from "node:path";
import { fileURLToPath } from "node:url";
import { describe, expect, it } from "vitest";

const SRC = path.dirname(fileURLToPath(import.meta.url));
const PUBLIC_FILES = ["client.ts", "errors.ts", "kubernetes.ts"];

/** Public functions and methods of a source file whose doc comment has no `@example`. */
function withoutExample(file: string): string[] {
  const text = fs.readFileSync(path.join(SRC, file), "utf8");
  const missing: string[] = [];
  const decl = /\n(?: {2}(?:async \*?)?([a-z]\w*)\(|export (?:async )?function (\w+)\()/g;
  for (let m = decl.exec(text); m; m = decl.exec(text)) {
    const name = (m[1] ?? m[2]) as string;
    if (["constructor", "if", "for", "while", "switch", "catch"].includes(name)) continue;
    const before = text.slice(0, m.index);
    const open = before.lastIndexOf("/**");
    const close = before.lastIndexOf("*/");
    const documented = open >= 0 && close > open && m.index - close < 5 && before.slice(open, close).includes("@example");
    if (!documented) missing.push(`${file}: ${name}`);
  }
  return missing;
}

describe("TSDoc", () => {
  it("every public function and method has a doc comment with an @example", () => {
    expect(PUBLIC_FILES.flatMap(withoutExample)).toEqual([]);
  });
});
