#!/usr/bin/env node
// The dependency rules of the repository (run by `npm run lint`, after biome
// and madge): which folder may import what. madge finds cycles; this finds
// imports that point the wrong way even when they close no cycle. Each rule
// is a row of RULES; a violation is reported with its file and line, and any
// violation fails the run.
//
//   node scripts/check-imports.mjs          check the repository
//
// Imports are read with TypeScript's pre-processor (static, type-only,
// re-exports, import() and require() with a literal), so comments and strings
// do not count and multi-line imports are seen where their specifier is.

import fs from "node:fs";
import { builtinModules } from "node:module";
import path from "node:path";
import { fileURLToPath, pathToFileURL } from "node:url";
import ts from "typescript";

const ROOT = path.dirname(path.dirname(fileURLToPath(import.meta.url)));
const ENGINE_SRC = "packages/engine/src/";
/** Where sources that import things live (repository-relative, posix). */
const SCANNED = [/^packages\/[^/]+\/(src|test)\/.*\.(ts|mts|js|mjs)$/, /^bench\/[^/]+\.mjs$/];
/** Never scanned: dependencies, build output, generated code (protoc's imports are not ours to arrange). */
const SKIPPED_DIRS = new Set(["node_modules", "dist", "gen", ".turbo", ".git"]);
/** Engine folders above `store/`: the store must not know who uses it (issue 11, DESIGN "Layout"). */
const ABOVE_STORE = new Set([
  "qos",
  "metadata",
  "target",
  "exports",
  "replication",
  "cluster",
  "control",
  "events",
  "metrics",
  "daemon",
  "cli",
  "demo",
  "local-cluster",
]);

/**
 * One import as a rule sees it.
 * @typedef {object} Import
 * @property {string} specifier what the source wrote, e.g. `../qos/policy.js` or `etcd3`
 * @property {number} line 1-based line of the specifier
 * @property {string | null} resolved for a relative specifier, the repository-relative path it points to
 */

/** `packages/engine/src/store/pool.ts` -> `store`; null outside the engine's sources. */
export function engineFolder(file) {
  if (!file.startsWith(ENGINE_SRC)) return null;
  const rest = file.slice(ENGINE_SRC.length);
  return rest.includes("/") ? rest.slice(0, rest.indexOf("/")) : "";
}

/** `packages/sdk/test/x.ts` -> `sdk`; null outside packages/. */
function packageOf(file) {
  const m = /^packages\/([^/]+)\//.exec(file);
  return m ? m[1] : null;
}

function isNodeBuiltin(specifier) {
  return specifier.startsWith("node:") || builtinModules.includes(specifier);
}

/** Unit tests beside the code drive it from above (they are not built); layering rules are about the shipped code. */
function isUnitTest(file) {
  return /\.test\.(ts|mts|js|mjs)$/.test(file);
}

/** What an import of `file` points to inside the engine's sources: its folder, or null. */
function targetFolder(imp) {
  return imp.resolved === null ? null : engineFolder(imp.resolved);
}

/** A folder that may import only the engine folders in `folders`, node builtins and the packages in `packages`. */
function onlyImports(folders, packages) {
  return (imp) => {
    if (imp.resolved !== null) return !folders.includes(targetFolder(imp) ?? "");
    return !isNodeBuiltin(imp.specifier) && !packages.includes(imp.specifier);
  };
}

/**
 * The rules. `appliesTo(file)` picks the importing files (repository-relative,
 * posix); `violates(import, file)` is true for a forbidden import.
 */
export const RULES = [
  {
    id: "etcd-only-in-metadata",
    description: "only packages/engine/src/metadata/ imports the etcd client (etcd3)",
    appliesTo: (file) => engineFolder(file) !== null && engineFolder(file) !== "metadata" && !isUnitTest(file),
    violates: (imp) => imp.specifier === "etcd3" || imp.specifier.startsWith("etcd3/"),
  },
  {
    id: "store-below-qos",
    description: `packages/engine/src/store/ imports nothing above it (${[...ABOVE_STORE].join(", ")})`,
    appliesTo: (file) => engineFolder(file) === "store" && !isUnitTest(file),
    violates: (imp) => ABOVE_STORE.has(targetFolder(imp) ?? ""),
  },
  {
    id: "nbd-protocol-only",
    description:
      "packages/engine/src/nbd/ imports only nbd/, util/, node builtins, @keelson/sdk and debug (tracing by namespace)",
    appliesTo: (file) => engineFolder(file) === "nbd" && !isUnitTest(file),
    violates: onlyImports(["nbd", "util"], ["@keelson/sdk", "debug"]),
  },
  {
    id: "local-cluster-drives-processes",
    description:
      "packages/engine/src/local-cluster/ imports only local-cluster/, util/, node builtins, @keelson/sdk and @grpc/grpc-js (it runs keelsond processes, it does not link the engine)",
    appliesTo: (file) => engineFolder(file) === "local-cluster" && !isUnitTest(file),
    violates: onlyImports(["local-cluster", "util"], ["@keelson/sdk", "@grpc/grpc-js"]),
  },
  {
    id: "no-reaching-into-packages",
    description: "no package (nor bench/) imports another package's src/ or dist/; use its entry (@keelson/<name>)",
    appliesTo: () => true,
    violates: (imp, file) => {
      if (/^@keelson\/[^/]+\/(src|dist)(\/|$)/.test(imp.specifier)) return true;
      const m = imp.resolved === null ? null : /^packages\/([^/]+)\/(src|dist)(\/|$)/.exec(imp.resolved);
      return m !== null && m[1] !== packageOf(file);
    },
  },
];

/** The imports of one source text, with lines and (for relative ones) the path they point to. */
export function importsOf(file, text) {
  const { importedFiles } = ts.preProcessFile(text, true, true);
  return importedFiles.map(({ fileName, pos }) => {
    const relative = fileName.startsWith("./") || fileName.startsWith("../");
    return {
      specifier: fileName,
      line: text.slice(0, pos).split("\n").length,
      resolved: relative ? path.posix.normalize(path.posix.join(path.posix.dirname(file), fileName)) : null,
    };
  });
}

/**
 * The violations in one source text: `{ file, line, rule, specifier, description }` each.
 * @param {string} file repository-relative, posix
 * @param {string} text its contents
 */
export function checkSource(file, text, rules = RULES) {
  const applying = rules.filter((r) => r.appliesTo(file));
  if (applying.length === 0) return [];
  const found = [];
  for (const imp of importsOf(file, text)) {
    for (const rule of applying) {
      if (rule.violates(imp, file)) {
        found.push({ file, line: imp.line, rule: rule.id, specifier: imp.specifier, description: rule.description });
      }
    }
  }
  return found;
}

/** Every scanned source file under `root`, repository-relative and posix. */
export function sourceFiles(root = ROOT) {
  const out = [];
  const walk = (dir) => {
    for (const entry of fs.readdirSync(path.join(root, dir), { withFileTypes: true })) {
      const rel = dir === "" ? entry.name : `${dir}/${entry.name}`;
      if (entry.isDirectory()) {
        if (!SKIPPED_DIRS.has(entry.name)) walk(rel);
      } else if (SCANNED.some((re) => re.test(rel))) {
        out.push(rel);
      }
    }
  };
  for (const top of ["packages", "bench"]) if (fs.existsSync(path.join(root, top))) walk(top);
  return out.sort();
}

function main() {
  const violations = sourceFiles().flatMap((f) => checkSource(f, fs.readFileSync(path.join(ROOT, f), "utf8")));
  for (const v of violations) console.error(`${v.file}:${v.line}: ${v.rule}: imports "${v.specifier}"`);
  if (violations.length === 0) {
    console.log(`check-imports: ${RULES.length} rules, no violations`);
    return;
  }
  console.error(`\ncheck-imports: ${violations.length} forbidden imports. The rules broken:`);
  for (const id of new Set(violations.map((v) => v.rule))) {
    console.error(`  ${id}: ${RULES.find((r) => r.id === id)?.description}`);
  }
  process.exitCode = 1;
}

if (process.argv[1] && import.meta.url === pathToFileURL(process.argv[1]).href) main();
