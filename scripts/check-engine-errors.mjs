#!/usr/bin/env node
// The error rules of the engine (run by `npm run lint`, after check-imports):
// engine code throws typed errors (`KeelsonError({ code, message, cause })`
// from @keelson/sdk, or `node:assert` for programmer errors), never a plain
// `Error`, and reads a caught value's text with `messageOf(unknown)`
// (src/util/errors.ts), never through an `as Error` cast
// (CONVENTIONS "Errors", issue 11 item 7). Each violation is reported with
// its file and line, and any violation fails the run.
//
//   node scripts/check-engine-errors.mjs    check packages/engine/src
//
// Sources are parsed with TypeScript, so comments and strings do not count.
// Unit tests (*.test.ts) may use plain errors.

import fs from "node:fs";
import path from "node:path";
import { fileURLToPath, pathToFileURL } from "node:url";
import ts from "typescript";

const ROOT = path.dirname(path.dirname(fileURLToPath(import.meta.url)));
const ENGINE_SRC = "packages/engine/src";

/** Files (or folders, ending in "/") exempt from the check: none; an entry needs a reason beside it. */
export const ALLOWED = [];

/** Whether `file` (repository-relative, posix) is checked. */
export function isChecked(file, allowed = ALLOWED) {
  if (!file.startsWith(`${ENGINE_SRC}/`) || !file.endsWith(".ts") || file.endsWith(".test.ts")) return false;
  return !allowed.some((a) => (a.endsWith("/") ? file.startsWith(a) : file === a));
}

function isPlainError(node) {
  return ts.isIdentifier(node) && node.text === "Error";
}

function isErrorType(type) {
  return ts.isTypeReferenceNode(type) && ts.isIdentifier(type.typeName) && type.typeName.text === "Error";
}

/** What is wrong with `node`, or null. */
function violationOf(node) {
  if (ts.isNewExpression(node) && isPlainError(node.expression)) return "plain new Error(...): throw a KeelsonError (or assert)";
  if (ts.isCallExpression(node) && isPlainError(node.expression)) return "plain Error(...): throw a KeelsonError (or assert)";
  if ((ts.isAsExpression(node) || ts.isTypeAssertionExpression(node)) && isErrorType(node.type)) {
    return "cast to Error: use messageOf(error) from util/errors.ts";
  }
  return null;
}

/** The violations in source `text` of `file`: `{ file, line, message }`, lines 1-based. */
export function checkSource(file, text) {
  const source = ts.createSourceFile(file, text, ts.ScriptTarget.Latest, true, ts.ScriptKind.TS);
  const out = [];
  const visit = (node) => {
    const message = violationOf(node);
    if (message !== null) {
      const line = source.getLineAndCharacterOfPosition(node.getStart(source)).line + 1;
      out.push({ file, line, message });
    }
    ts.forEachChild(node, visit);
  };
  visit(source);
  return out;
}

/** Every checked engine source, repository-relative, sorted. */
export function sourceFiles(root = ROOT) {
  const out = [];
  const walk = (dir) => {
    for (const entry of fs.readdirSync(path.join(root, dir), { withFileTypes: true })) {
      const rel = `${dir}/${entry.name}`;
      if (entry.isDirectory()) walk(rel);
      else if (isChecked(rel)) out.push(rel);
    }
  };
  walk(ENGINE_SRC);
  return out.sort();
}

function main() {
  const files = sourceFiles();
  const violations = files.flatMap((f) => checkSource(f, fs.readFileSync(path.join(ROOT, f), "utf8")));
  for (const v of violations) console.error(`${v.file}:${v.line}: ${v.message}`);
  if (violations.length === 0) {
    console.log(`check-engine-errors: ${files.length} files, no plain errors or Error casts`);
    return;
  }
  console.error(`\ncheck-engine-errors: ${violations.length} violations (CONVENTIONS "Errors")`);
  process.exitCode = 1;
}

if (process.argv[1] && import.meta.url === pathToFileURL(process.argv[1]).href) main();
