// The packed @keelson/conformance, installed into a fresh project with the
// packed sdk, engine and csi it depends on, as a vendor would get it: the
// `keelson-conformance` binary lists the checks, prints the profile, and runs
// a check against a local cluster made from the installed engine.

import { spawnSync } from "node:child_process";
import fs from "node:fs";
import os from "node:os";
import path from "node:path";
import { fileURLToPath } from "node:url";
import { describe, expect, it } from "vitest";
import { canRun } from "../src/testing/env.js";
import { hostState, leftovers, NOTHING_LEFT } from "./helpers/host-state.js";

const PACKAGES = fileURLToPath(new URL("../../", import.meta.url));

function sh(cmd: string, args: string[], cwd: string, timeoutMs = 180_000): string {
  const r = spawnSync(cmd, args, { cwd, encoding: "utf8", timeout: timeoutMs });
  if (r.status !== 0) throw new Error(`${cmd} ${args.join(" ")} (in ${cwd}) exited ${r.status}:\n${r.stdout}\n${r.stderr}`);
  return r.stdout;
}

/** `npm pack` of a workspace package into `dir`; the tarball's path and the files it holds. */
function pack(name: string, dir: string): { tarball: string; files: string[] } {
  const out = sh("npm", ["pack", "--json", "--pack-destination", dir], path.join(PACKAGES, name));
  const [info] = JSON.parse(out.slice(out.indexOf("["))) as { filename: string; files: { path: string }[] }[];
  if (!info) throw new Error(`npm pack ${name} said nothing`);
  return { tarball: path.join(dir, info.filename), files: info.files.map((f) => f.path) };
}

describe("the packed @keelson/conformance", () => {
  it("installs from tarballs into a fresh project; npx keelson-conformance lists, prints the profile and runs a check", async (t) => {
    if (!canRun({ root: true, tools: ["etcd", "npm"] }, t.task.name)) return t.skip();
    const dir = fs.mkdtempSync(path.join(os.tmpdir(), "kc-pack-"));
    const before = hostState();
    try {
      const conformance = pack("conformance", dir);
      // Built code, its types, the schema and the profiles: no sources, no tests.
      expect(conformance.files).toEqual(
        expect.arrayContaining(["dist/cli.js", "dist/index.d.ts", "schema/report.schema.json", "profiles/keelson-local.yaml"]),
      );
      expect(conformance.files.filter((f) => f.startsWith("src/") || f.includes(".test.") || f.startsWith("test/"))).toEqual([]);
      // The csi target loads keelson-csi's csi.proto: the driver package ships it.
      const csi = pack("csi", dir);
      expect(csi.files).toEqual(expect.arrayContaining(["proto/csi/v1/csi.proto", "dist/index.js"]));
      // The engine builds its addon at install: every source of it must be in the tarball.
      const engine = pack("engine", dir);
      const nativeSources = fs
        .readdirSync(path.join(PACKAGES, "engine", "native", "uring"))
        .filter((f) => /\.(c|h|gyp)$/.test(f))
        .map((f) => `native/uring/${f}`);
      expect(nativeSources.length).toBeGreaterThan(2);
      expect(engine.files).toEqual(expect.arrayContaining(nativeSources));
      const tarballs = [pack("sdk", dir).tarball, engine.tarball, csi.tarball, conformance.tarball];
      const app = path.join(dir, "app");
      fs.mkdirSync(app);
      fs.writeFileSync(path.join(app, "package.json"), JSON.stringify({ name: "vendor-ci", private: true, type: "module" }));
      // Dependencies come from the npm cache `npm ci` filled (the registry otherwise).
      sh("npm", ["install", "--prefer-offline", "--no-audit", "--no-fund", ...tarballs], app, 300_000);

      const list = sh("npx", ["--no-install", "keelson-conformance", "list"], app);
      expect(list).toMatch(/ha\.fault-campaign\s+acknowledged writes lost/);
      expect(sh("npx", ["--no-install", "keelson-conformance", "profile"], app)).toMatch(/ha\.serving-node-loss:/);
      const out = path.join(dir, "report");
      const run = spawnSync(
        "npx",
        [
          "--no-install",
          "keelson-conformance",
          "run",
          "--nodes",
          "1",
          "--suite",
          "snapshot",
          "--check",
          "snapshot.restore",
          "--out",
          out,
        ],
        { cwd: app, encoding: "utf8", timeout: 300_000 },
      );
      expect(run.status, `${run.stdout}\n${run.stderr}`).toBe(0);
      expect(run.stdout).toMatch(/snapshot\.restore\s+pass/);
      expect(fs.existsSync(path.join(out, "report.html"))).toBe(true);
    } finally {
      fs.rmSync(dir, { recursive: true, force: true });
    }
    expect(leftovers(before, hostState())).toEqual(NOTHING_LEFT);
  }, 600_000);
});
