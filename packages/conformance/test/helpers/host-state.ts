import { execFileSync } from "node:child_process";
import fs from "node:fs";

/** What a run can leave behind on the host: namespaces, loop devices, mounts and suite processes. */
export interface HostState {
  netns: string[];
  loops: string[];
  mounts: string[];
  processes: string[];
}

function lines(cmd: string, args: string[]): string[] {
  try {
    return execFileSync(cmd, args, { encoding: "utf8" })
      .split("\n")
      .map((l) => l.trim())
      .filter(Boolean);
  } catch {
    return [];
  }
}

/** Processes whose command line names a conformance scratch dir (keelsond, etcd, fio, nbdfuse of a run). */
function suiteProcesses(): string[] {
  const out: string[] = [];
  for (const pid of fs.readdirSync("/proc").filter((p) => /^\d+$/.test(p))) {
    try {
      const cmd = fs.readFileSync(`/proc/${pid}/cmdline`, "utf8").replace(/\0/g, " ");
      if ((cmd.includes("keelson-conformance-") || cmd.includes("keelson-etcd-")) && !cmd.includes("vitest"))
        out.push(`${pid} ${cmd.slice(0, 160)}`);
    } catch {
      // Gone meanwhile.
    }
  }
  return out;
}

export function hostState(): HostState {
  return {
    netns: lines("ip", ["netns", "list"]).map((l) => l.split(" ")[0] as string),
    loops: lines("losetup", ["-a"]),
    mounts: fs
      .readFileSync("/proc/mounts", "utf8")
      .split("\n")
      .filter((l) => l.includes("keelson-conformance-")),
    processes: suiteProcesses(),
  };
}

/** What `after` has that `before` had not. */
export function leftovers(before: HostState, after: HostState): HostState {
  const extra = (a: string[], b: string[]) => b.filter((x) => !a.includes(x));
  return {
    netns: extra(before.netns, after.netns),
    loops: extra(before.loops, after.loops),
    mounts: extra(before.mounts, after.mounts),
    processes: extra(before.processes, after.processes),
  };
}

export const NOTHING_LEFT: HostState = { netns: [], loops: [], mounts: [], processes: [] };

/**
 * Undoes what a failed run left under `dir`: loop devices over files there (while their backing paths
 * still show), then mounts there, lazily, innermost first (a FUSE server exits once its mount goes).
 */
export function undoUnder(dir: string): void {
  for (const line of lines("losetup", ["--list", "--noheadings", "--output", "NAME,BACK-FILE"])) {
    const [name, file] = line.split(/\s+/);
    if (name && file?.startsWith(dir)) lines("losetup", ["--detach", name]);
  }
  const points = fs
    .readFileSync("/proc/self/mountinfo", "utf8")
    .split("\n")
    .map((l) => l.split(" ")[4] ?? "")
    .filter((p) => p.startsWith(dir))
    .reverse();
  for (const p of points) lines("umount", ["-l", p]);
}
