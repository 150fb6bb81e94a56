// The csi target against keelson-csi: a keelson cluster here, keelson-csi as its own process on a
// unix socket, and the suite's CLI driving it as kubelet and the sidecars would.

import { type ChildProcess, spawn } from "node:child_process";
import fs from "node:fs";
import os from "node:os";
import path from "node:path";
import { fileURLToPath } from "node:url";
import { LocalCluster, type StartedLocalCluster } from "@keelson/engine";
import { describe, expect, it, onTestFinished } from "vitest";
import { ALL_CHECKS } from "../src/checks/registry.js";
import { readReport } from "../src/report/validate.js";
import { canRun } from "../src/testing/env.js";
import { hostState, leftovers, NOTHING_LEFT, undoUnder } from "./helpers/host-state.js";

const CLI = fileURLToPath(new URL("../dist/cli.js", import.meta.url));
const CSI_CLI = fileURLToPath(import.meta.resolve("@keelson/csi").replace(/index\.js$/, "cli.js"));
const ARTIFACTS = fileURLToPath(new URL("../artifacts/", import.meta.url));
const MIB = 1024 * 1024;

function runCli(args: string[]): Promise<{ code: number | null; output: string }> {
  return new Promise((resolve) => {
    const child = spawn(process.execPath, [CLI, ...args], { stdio: ["ignore", "pipe", "pipe"] });
    let output = "";
    const take = (d: Buffer) => {
      output += d.toString();
      process.stdout.write(d);
    };
    child.stdout.on("data", take);
    child.stderr.on("data", take);
    child.on("exit", (code) => resolve({ code, output }));
  });
}

/** Starts keelson-csi (both services) for node1 of `cluster`; resolves once its socket exists. */
async function startDriver(cluster: StartedLocalCluster, dir: string): Promise<{ endpoint: string; child: ChildProcess }> {
  const socket = path.join(dir, "csi.sock");
  const log = fs.openSync(path.join(dir, "keelson-csi.log"), "a");
  const node1 = cluster.nodes[0];
  if (!node1) throw new Error("no node1");
  const child = spawn(
    process.execPath,
    [
      CSI_CLI,
      ...["--endpoint", `unix://${socket}`, "--mode", "all", "--node-id", node1.nodeId],
      ...["--engine", node1.grpcAddress, "--state-dir", path.join(dir, "csi-state")],
    ],
    { stdio: ["ignore", log, log] },
  );
  fs.closeSync(log);
  const deadline = Date.now() + 20_000;
  while (!fs.existsSync(socket)) {
    if (child.exitCode !== null || Date.now() > deadline) {
      throw new Error(`keelson-csi did not start: ${fs.readFileSync(path.join(dir, "keelson-csi.log"), "utf8").slice(-2000)}`);
    }
    await new Promise((r) => setTimeout(r, 100));
  }
  return { endpoint: `unix://${socket}`, child };
}

describe("the csi target", () => {
  it(
    "keelson-conformance run --target csi against keelson-csi: the snapshot and latency families pass, and the report says which checks are not applicable and why",
    async (t) => {
      if (!canRun({ root: true, tools: ["etcd", "fio", "nbdfuse", "mkfs.ext4"] }, t.task.name)) return t.skip();
      const before = hostState();
      const dir = fs.mkdtempSync(path.join(os.tmpdir(), "keelson-conformance-csi-"));
      const out = path.join(dir, "report");
      let cluster: StartedLocalCluster | null = null;
      let driver: ChildProcess | null = null;
      onTestFinished(async () => {
        driver?.kill("SIGTERM");
        // What a failed run left (mounts of published volumes, nbdfuse, loop devices) goes before the cluster.
        undoUnder(dir);
        await cluster?.stop();
        fs.rmSync(dir, { recursive: true, force: true });
      });
      cluster = await LocalCluster.start({ nodes: 3, dir: path.join(dir, "cluster"), diskSizeBytes: 2048 * MIB, leaseTtlS: 5 });
      const started = await startDriver(cluster, dir);
      driver = started.child;

      const r = await runCli([
        ...["run", "--target", "csi", "--endpoint", started.endpoint, "--parameters", "fsType=ext4"],
        ...["--suite", "snapshot,latency", "--duration", "short", "--out", out, "--seed", "7"],
      ]);
      fs.mkdirSync(ARTIFACTS, { recursive: true });
      fs.cpSync(out, path.join(ARTIFACTS, "csi-report"), { recursive: true });
      const report = readReport(path.join(out, "report.json"));
      expect(report.environment.target).toBe("csi");

      const families = new Set(["snapshot", "latency"]);
      expect(report.checks.map((c) => c.id)).toEqual(ALL_CHECKS.filter((c) => families.has(c.family)).map((c) => c.id));
      const bad = report.checks.filter((c) => c.verdict === "fail" || c.verdict === "error");
      expect(bad.map((c) => `${c.id}: ${c.verdict}: ${c.message}`)).toEqual([]);
      expect(r.code, r.output.slice(-3000)).toBe(0);
      // What CSI cannot express is named, not passed: in-place revert, replicas, replica reads.
      const na = Object.fromEntries(report.checks.filter((c) => c.verdict === "not-applicable").map((c) => [c.id, c.message]));
      expect(na).toEqual({
        "snapshot.revert": "target csi lacks revert",
        "snapshot.byte-exact-replicated": "target csi lacks replication",
        "latency.replicas-3": "target csi lacks replication",
      });
      const passed = report.checks.filter((c) => c.verdict === "pass").map((c) => c.id);
      expect(passed).toEqual(
        expect.arrayContaining(["snapshot.byte-exact", "snapshot.clone-independence", "latency.replicas-1"]),
      );

      // Nothing of the run is left: no volume in keelson, no mount, loop device or namespace of its own.
      expect(await cluster.client(0).listVolumes()).toEqual([]);
      driver.kill("SIGTERM");
      await cluster.stop();
      cluster = null;
      expect(leftovers(before, hostState()), "the run left things behind").toEqual(NOTHING_LEFT);
    },
    30 * 60_000,
  );
});
