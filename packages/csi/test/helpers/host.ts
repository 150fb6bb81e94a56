import fs from "node:fs";
import { run } from "../../src/host-tools.js";

/** Root (namespaces, loop devices, nbdfuse, mkfs, mount): a test without it is skipped with a loud line, and CI fails a skip. */
export function isRootOrSay(what: string): boolean {
  const root = process.getuid?.() === 0;
  if (!root) console.warn(`\n*** SKIPPED: ${what} needs root (nbdfuse, loop devices, mkfs, mount) ***\n`);
  return root;
}

/** This process's mount table (mountinfo: bind mounts included). */
export function mounts(): string {
  return fs.readFileSync("/proc/self/mountinfo", "utf8");
}

/**
 * Undoes what a failed test left under `dir` (except under `keep`): loop devices over files there first
 * (while their backing paths still show), then mounts, lazily, innermost first.
 */
export async function unmountUnder(dir: string, keep?: string): Promise<void> {
  const loops = await run("losetup", ["--list", "--noheadings", "--output", "NAME,BACK-FILE"]).catch(() => "");
  for (const line of loops.split("\n")) {
    const [name, file] = line.trim().split(/\s+/);
    if (name && file?.startsWith(dir) && !(keep && file.startsWith(keep)))
      await run("losetup", ["--detach", name]).catch(() => undefined);
  }
  for (const line of mounts().split("\n").reverse()) {
    const point = line.split(" ")[4];
    if (point?.startsWith(dir) && !(keep && point.startsWith(keep))) await run("umount", ["-l", point]).catch(() => undefined);
  }
}
