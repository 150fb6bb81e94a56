import { type ChildProcess, spawn } from "node:child_process";
import fs from "node:fs";
import path from "node:path";
import type { Cleanup } from "./cleanup.js";
import { run, waitExit } from "./process.js";

/** Attaches a loop device to `file`; detached by `cleanup`. */
export async function attachLoop(file: string, cleanup: Cleanup): Promise<string> {
  const dev = (await run("losetup", ["--find", "--show", file])).stdout.trim();
  cleanup.add(`losetup -d ${dev}`, () => run("losetup", ["-d", dev], { allowFail: true }));
  return dev;
}

/**
 * Exposes an NBD export as a block device with no kernel NBD module: nbdfuse
 * serves it as a file, and a loop device goes on that file.
 */
export async function nbdBlockDevice(uri: string, dir: string, cleanup: Cleanup): Promise<string> {
  const mnt = fs.mkdtempSync(path.join(dir, "fuse-"));
  const fuse: ChildProcess = spawn("nbdfuse", [mnt, uri], { stdio: "ignore" });
  cleanup.add(`nbdfuse ${mnt}`, async () => {
    await run("fusermount3", ["-u", mnt], { allowFail: true });
    await waitExit(fuse, 5_000);
    if (fuse.exitCode === null && fuse.signalCode === null) fuse.kill("SIGKILL");
  });
  const file = path.join(mnt, "nbd");
  for (let i = 0; i < 100 && !fs.existsSync(file); i++) await new Promise((r) => setTimeout(r, 50));
  if (!fs.existsSync(file)) throw new Error(`nbdfuse did not expose ${uri}`);
  return attachLoop(file, cleanup);
}

/** Mounts `dev` on a new directory under `dir`; unmounted by `cleanup`. */
export async function mount(dev: string, dir: string, cleanup: Cleanup): Promise<string> {
  const target = fs.mkdtempSync(path.join(dir, "mnt-"));
  await run("mount", [dev, target]);
  cleanup.add(`umount ${target}`, () => run("umount", [target], { allowFail: true }));
  return target;
}
