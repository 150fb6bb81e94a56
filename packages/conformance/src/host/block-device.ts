// Turns an NBD export into a block device and a block device into a mounted
// filesystem, the way a node does without the kernel NBD module: nbdfuse
// serves the export as a file and a loop device goes on it.

import { type ChildProcess, spawn } from "node:child_process";
import fs from "node:fs";
import path from "node:path";
import { ConformanceError } from "../errors.js";
import type { CleanupStack } from "./cleanup.js";
import { exec } from "./exec.js";

const FUSE_START_TIMEOUT_MS = 10_000;
const FUSE_STOP_TIMEOUT_MS = 5_000;

async function waitExit(child: ChildProcess, timeoutMs: number): Promise<void> {
  if (child.exitCode !== null || child.signalCode !== null) return;
  await new Promise<void>((resolve) => {
    const timer = setTimeout(resolve, timeoutMs);
    child.once("exit", () => {
      clearTimeout(timer);
      resolve();
    });
  });
}

/** A loop device on `file`; detached by `cleanup`. */
export async function attachLoop(file: string, cleanup: CleanupStack, readOnly = false): Promise<string> {
  const args = readOnly ? ["--find", "--show", "--read-only", file] : ["--find", "--show", file];
  const dev = (await exec("losetup", args)).stdout.trim();
  cleanup.push(`losetup -d ${dev}`, async () => {
    await exec("losetup", ["-d", dev]);
  });
  return dev;
}

/** Exposes the NBD export `uri` as a block device; `dir` holds the FUSE mount point. */
export async function nbdBlockDevice(uri: string, dir: string, cleanup: CleanupStack, readOnly = false): Promise<string> {
  const mnt = fs.mkdtempSync(path.join(dir, "fuse-"));
  const fuse = spawn("nbdfuse", [...(readOnly ? ["--readonly"] : []), mnt, uri], {
    stdio: ["ignore", "ignore", "pipe"],
    // Its own process group: a terminal's Ctrl-C must not take the device away before the suite unmounts it.
    detached: true,
  });
  let stderr = "";
  fuse.stderr?.on("data", (d: Buffer) => {
    if (stderr.length < 4096) stderr += d.toString();
  });
  fuse.on("error", () => undefined);
  cleanup.push(`nbdfuse ${mnt}`, async () => {
    await exec("fusermount3", ["-u", mnt], { allowFail: true });
    await waitExit(fuse, FUSE_STOP_TIMEOUT_MS);
    if (fuse.exitCode === null && fuse.signalCode === null) fuse.kill("SIGKILL");
    await waitExit(fuse, FUSE_STOP_TIMEOUT_MS);
    fs.rmSync(mnt, { recursive: true, force: true });
  });
  const file = path.join(mnt, "nbd");
  const deadline = Date.now() + FUSE_START_TIMEOUT_MS;
  while (!fs.existsSync(file)) {
    if (fuse.exitCode !== null || Date.now() > deadline) {
      throw new ConformanceError({ code: "TOOL_FAILED", message: `nbdfuse did not expose ${uri}: ${stderr.trim()}` });
    }
    await new Promise((r) => setTimeout(r, 50));
  }
  return attachLoop(file, cleanup, readOnly);
}

/** True when `dev` carries a filesystem signature. */
async function hasFilesystem(dev: string): Promise<boolean> {
  const r = await exec("blkid", ["-p", dev], { allowFail: true });
  return r.code === 0 && /TYPE=/.test(r.stdout);
}

/** Makes `fsType` on `dev` unless it has a filesystem, mounts it under `dir`; unmounted by `cleanup`. */
export async function mountFilesystem(
  dev: string,
  fsType: "ext4" | "xfs",
  dir: string,
  cleanup: CleanupStack,
  readOnly = false,
): Promise<string> {
  if (!readOnly && !(await hasFilesystem(dev))) {
    await exec(fsType === "ext4" ? "mkfs.ext4" : "mkfs.xfs", fsType === "ext4" ? ["-q", "-F", dev] : ["-q", "-f", dev], {
      timeoutMs: 120_000,
    });
  }
  const target = fs.mkdtempSync(path.join(dir, "mnt-"));
  await exec("mount", [...(readOnly ? ["-o", "ro"] : []), "-t", fsType, dev, target]);
  cleanup.push(`umount ${target}`, async () => {
    await exec("umount", [target]);
    fs.rmSync(target, { recursive: true, force: true });
  });
  return target;
}
