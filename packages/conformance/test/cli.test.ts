// The CLI's commands other than `run` (which test/suite.test.ts drives), as a
// user or a CI pipeline calls them: exit codes and what they print.

import { spawnSync } from "node:child_process";
import fs from "node:fs";
import os from "node:os";
import path from "node:path";
import { fileURLToPath } from "node:url";
import { afterEach, describe, expect, it } from "vitest";
import { ALL_CHECKS } from "../src/checks/registry.js";
import { sampleReport } from "../src/report/sample.js";
import type { Report } from "../src/report/types.js";

const CLI = fileURLToPath(new URL("../dist/cli.js", import.meta.url));
const dirs: string[] = [];

function cli(args: string[]): { code: number | null; stdout: string; stderr: string } {
  const r = spawnSync(process.execPath, [CLI, ...args], { encoding: "utf8", timeout: 60_000 });
  return { code: r.status, stdout: r.stdout, stderr: r.stderr };
}

function tmp(): string {
  const d = fs.mkdtempSync(path.join(os.tmpdir(), "kc-cli-"));
  dirs.push(d);
  return d;
}

function save(report: Report, dir: string, name: string): string {
  const file = path.join(dir, name);
  fs.writeFileSync(file, JSON.stringify(report));
  return file;
}

/** The sample report with every latency curve's p99 made `factor` times slower. */
function slowerP99(report: Report, factor: number): Report {
  const copy = structuredClone(report);
  for (const c of copy.checks) {
    for (const curve of c.latency) {
      for (const p of curve.percentiles) if (p.percentile === 99) p.latencyUs *= factor;
    }
  }
  return copy;
}

afterEach(() => {
  for (const d of dirs.splice(0)) fs.rmSync(d, { recursive: true, force: true });
});

describe("keelson-conformance", () => {
  it("list prints every check with what it measures, and the capabilities", () => {
    const r = cli(["list"]);
    expect(r.code).toBe(0);
    for (const c of ALL_CHECKS) expect(r.stdout).toContain(`${c.id}`);
    expect(r.stdout).toMatch(/fault-partition-node\s+cuts a node off the network/);
  });

  it("compare exits 0 on equal reports and 1 on a report whose p99 is 20% worse, naming the figure", () => {
    const dir = tmp();
    const base = sampleReport();
    expect(base.checks.some((c) => c.latency.length > 0)).toBe(true);
    const a = save(base, dir, "base.json");
    const same = cli(["compare", a, save(base, dir, "same.json"), "--max-regression", "10%"]);
    expect(same.code, same.stdout + same.stderr).toBe(0);
    const worse = cli(["compare", a, save(slowerP99(base, 1.2), dir, "worse.json"), "--max-regression", "10%"]);
    expect(worse.code, worse.stdout).toBe(1);
    expect(worse.stdout).toMatch(/p99Us/);
    expect(worse.stdout).toMatch(/regress/i);
    const slightly = cli(["compare", a, save(slowerP99(base, 1.05), dir, "slightly.json"), "--max-regression", "10%"]);
    expect(slightly.code, slightly.stdout).toBe(0);
  });

  it("compare refuses a file that is not a report (exit 1, SCHEMA_INVALID) and a bad bound (exit 2)", () => {
    const dir = tmp();
    const a = save(sampleReport(), dir, "a.json");
    const bad = path.join(dir, "bad.json");
    fs.writeFileSync(bad, JSON.stringify({ schemaVersion: 1, checks: "nope" }));
    const r = cli(["compare", a, bad]);
    expect(r.code).toBe(1);
    expect(r.stderr).toMatch(/SCHEMA_INVALID/);
    expect(cli(["compare", a, a, "--max-regression", "lots"]).code).toBe(2);
  });

  it("report DIR re-renders report.html and junit.xml from report.json", () => {
    const dir = tmp();
    save(sampleReport(), dir, "report.json");
    const r = cli(["report", dir]);
    expect(r.code, r.stderr).toBe(0);
    expect(fs.readFileSync(path.join(dir, "report.html"), "utf8")).toMatch(/<svg/);
    expect(fs.readFileSync(path.join(dir, "junit.xml"), "utf8")).toMatch(/<testsuites/);
  });

  it("profile prints the default thresholds as YAML that run accepts back; a profile naming an unknown check is refused with the valid ones", () => {
    const dir = tmp();
    const r = cli(["profile"]);
    expect(r.code).toBe(0);
    expect(r.stdout).toMatch(/ha\.serving-node-loss:\n\s+replicasKept:/);
    const bad = path.join(dir, "bad.yaml");
    fs.writeFileSync(bad, "name: x\nthresholds:\n  ha.nope:\n    rtoMs: { max: 1 }\n");
    const refused = cli(["run", "--profile", bad, "--out", path.join(dir, "out")]);
    expect(refused.code).toBe(2);
    expect(refused.stderr).toMatch(/unknown check ha\.nope; valid: ha\.replica-loss/);
  });

  it("bad usage exits 2 with the valid values", () => {
    const r = cli(["run", "--suite", "ha,speed"]);
    expect(r.code).toBe(2);
    expect(r.stderr).toMatch(/--suite speed: valid: ha, qos, latency, snapshot/);
    expect(cli(["frobnicate"]).code).toBe(2);
    expect(cli(["run", "--target", "kind"]).code).toBe(1);
  });
});
