import { spawn } from "node:child_process";
import fs from "node:fs";
import os from "node:os";
import path from "node:path";
import { fileURLToPath } from "node:url";
import { describe, expect, it } from "vitest";
import { canRun } from "../src/testing/env.js";
import { hostState, leftovers, NOTHING_LEFT } from "./helpers/host-state.js";

const CLI = fileURLToPath(new URL("../dist/cli.js", import.meta.url));
const EXIT_TIMEOUT_MS = 120_000;

/**
 * Runs the CLI until a line matches `when`, sends `signal` (to its whole
 * process group when `group`, else to the CLI alone, as a service manager
 * does), and resolves with its exit code and output.
 */
function interruptWhen(
  args: string[],
  when: RegExp,
  signal: NodeJS.Signals,
  group: boolean,
): Promise<{ code: number | null; output: string; sent: boolean }> {
  return new Promise((resolve, reject) => {
    // A process group of its own, so `group` reaches the CLI and what it spawned, as a terminal's Ctrl-C does.
    const child = spawn(process.execPath, [CLI, ...args], { stdio: ["ignore", "pipe", "pipe"], detached: true });
    let output = "";
    let sent = false;
    const onData = (d: Buffer) => {
      output += d.toString();
      if (!sent && when.test(output)) {
        sent = true;
        if (group) process.kill(-(child.pid as number), signal);
        else child.kill(signal);
      }
    };
    child.stdout.on("data", onData);
    child.stderr.on("data", onData);
    const timer = setTimeout(() => {
      child.kill("SIGKILL");
      reject(new Error(`the CLI did not exit in time after ${signal}:\n${output}`));
    }, EXIT_TIMEOUT_MS * 3);
    child.on("exit", (code) => {
      clearTimeout(timer);
      resolve({ code, output, sent });
    });
  });
}

describe("keelson-conformance run, interrupted", () => {
  for (const [signal, group, when, args] of [
    ["SIGINT", true, /fault 2\/40/, ["--suite", "ha", "--check", "ha.fault-campaign", "--faults", "40"]],
    ["SIGINT", true, /writing \d+ fsynced files/, ["--suite", "snapshot", "--check", "snapshot.fs-crash-consistency"]],
    ["SIGTERM", false, /IOPS/, ["--suite", "latency"]],
  ] as const) {
    it(`${signal} to ${group ? "the terminal's process group (Ctrl-C)" : "the CLI"} in the middle of a run (${args.join(" ")}): exit 130 and no namespace, loop device, mount or process left`, async (t) => {
      if (!canRun({ root: true, tools: ["etcd", "fio", "nbdfuse"] }, t.task.name)) return t.skip();
      const before = hostState();
      const out = fs.mkdtempSync(path.join(os.tmpdir(), "kc-int-"));
      try {
        const r = await interruptWhen(["run", "--target", "local", "--nodes", "3", "--out", out, ...args], when, signal, group);
        expect(r.sent, `the run never reached ${when}:\n${r.output}`).toBe(true);
        expect(r.code, r.output).toBe(130);
        expect(r.output).toMatch(/cleaning up/);
        expect(leftovers(before, hostState())).toEqual(NOTHING_LEFT);
        expect(fs.existsSync(path.join(out, "report.json"))).toBe(false);
      } finally {
        fs.rmSync(out, { recursive: true, force: true });
      }
    });
  }
});
