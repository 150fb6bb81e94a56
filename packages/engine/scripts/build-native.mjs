#!/usr/bin/env node
// Builds the io_uring addon (native/uring) with node-gyp against the headers
// of the node that runs this script; nothing is downloaded. Run by the
// engine's `install` and `build` scripts. Without the headers, liburing or a
// compiler it says why and exits 0: keelsond then runs its disk I/O on the
// thread pool (and says so in `keelson node info`). KEELSON_REQUIRE_IO_URING=1
// (CI) makes a missing addon a failure.
//
//   node scripts/build-native.mjs [--force]

import { spawnSync } from "node:child_process";
import fs from "node:fs";
import path from "node:path";
import { fileURLToPath } from "node:url";

const here = path.dirname(path.dirname(fileURLToPath(import.meta.url)));
const source = path.join(here, "native", "uring");
const built = path.join(source, "build", "Release", "keelson_uring.node");
const required = process.env.KEELSON_REQUIRE_IO_URING === "1";

function giveUp(why) {
  const line = `keelson: io_uring addon not built: ${why}; keelsond will use the thread pool for disk I/O`;
  if (required) {
    console.error(`${line} (KEELSON_REQUIRE_IO_URING=1: failing)`);
    process.exit(1);
  }
  console.warn(line);
  process.exit(0);
}

/** A prefix whose include/node holds node_api.h for this node (Debian: /usr). */
function nodeDir() {
  const prefix = path.resolve(path.dirname(process.execPath), "..");
  for (const dir of [process.env.npm_config_nodedir, prefix, "/usr", "/usr/local"]) {
    if (dir && fs.existsSync(path.join(dir, "include", "node", "node_api.h"))) return dir;
  }
  return null;
}

function nodeGyp() {
  const candidates = [
    process.env.npm_config_node_gyp,
    path.resolve(path.dirname(process.execPath), "../lib/node_modules/npm/node_modules/node-gyp/bin/node-gyp.js"),
    "/usr/lib/node_modules/npm/node_modules/node-gyp/bin/node-gyp.js",
    "/usr/share/nodejs/node-gyp/bin/node-gyp.js",
  ];
  return candidates.find((c) => c && fs.existsSync(c)) ?? null;
}

// Every source the build compiles or reads: a change to any of them rebuilds.
const sources = fs
  .readdirSync(source)
  .filter((f) => /\.(c|h|gyp)$/.test(f))
  .map((f) => path.join(source, f));
const upToDate =
  fs.existsSync(built) &&
  !process.argv.includes("--force") &&
  sources.every((s) => fs.statSync(s).mtimeMs <= fs.statSync(built).mtimeMs);
if (upToDate) process.exit(0);

if (process.platform !== "linux") giveUp(`io_uring is Linux only (this is ${process.platform})`);
const dir = nodeDir();
if (!dir) giveUp("no node headers (include/node/node_api.h) next to this node or under /usr");
if (!fs.existsSync("/usr/include/liburing.h")) giveUp("liburing's header is missing (apt-get install liburing-dev)");
const gyp = nodeGyp();
if (!gyp) giveUp("node-gyp not found (it comes with npm)");

const result = spawnSync(process.execPath, [gyp, "rebuild", `--nodedir=${dir}`, "--loglevel=warn"], {
  cwd: source,
  stdio: ["ignore", "ignore", "inherit"],
  env: { ...process.env, npm_config_nodedir: dir },
});
if (result.status !== 0 || !fs.existsSync(built)) giveUp(`node-gyp failed (exit ${result.status}); see its output above`);
console.log(`keelson: io_uring addon built (${path.relative(here, built)})`);
