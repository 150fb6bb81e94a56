import { spawn } from "node:child_process";
import fs from "node:fs";
import os from "node:os";
import path from "node:path";
import { isKeelsonError } from "@keelson/sdk";
import { afterEach, beforeEach, expect, it } from "vitest";
import { openPoolDevice } from "./pool-device.js";

let dir: string;
beforeEach(() => {
  dir = fs.mkdtempSync(path.join(os.tmpdir(), "keelson-pool-device-"));
});
afterEach(() => {
  fs.rmSync(dir, { recursive: true, force: true });
});

/** A live process that is not this one, killed when the test is done. */
async function withOtherProcess(use: (pid: number) => void): Promise<void> {
  const child = spawn("sleep", ["30"], { stdio: "ignore" });
  try {
    use(child.pid as number);
  } finally {
    child.kill("SIGKILL");
    await new Promise((r) => child.once("exit", r));
  }
}

function refusal(poolPath: string): unknown {
  try {
    openPoolDevice({ path: poolPath }).close();
    return "opened";
  } catch (error) {
    return error;
  }
}

it("pool file lock: a symlink naming a live process (or an older engine's lock file) refuses VOLUME_IN_USE; a dead owner's lock is taken over and removed on close", async () => {
  const poolPath = path.join(dir, "pool.img");
  const lockPath = `${poolPath}.lock`;
  openPoolDevice({ path: poolPath, createSizeBytes: 64 * 1024 * 1024 }).close();
  expect(fs.existsSync(lockPath)).toBe(false);
  await withOtherProcess((pid) => {
    fs.symlinkSync(String(pid), lockPath);
    expect(isKeelsonError(refusal(poolPath), "VOLUME_IN_USE")).toBe(true);
    fs.rmSync(lockPath);
    fs.writeFileSync(lockPath, String(pid));
    expect(isKeelsonError(refusal(poolPath), "VOLUME_IN_USE")).toBe(true);
  });
  // The owner is gone now: its lock (here an old-style file) is taken over.
  const device = openPoolDevice({ path: poolPath });
  expect(Number(fs.readlinkSync(lockPath))).toBe(process.pid);
  device.close();
  expect(() => fs.lstatSync(lockPath)).toThrow();
});
