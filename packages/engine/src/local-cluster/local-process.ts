import { spawn } from "node:child_process";
import fs from "node:fs";
import net from "node:net";
import { KeelsonError } from "@keelson/sdk";

/** Polls every this often while waiting for a process or a file. */
const POLL_MS = 50;

const sleep = (ms: number): Promise<void> => new Promise((r) => setTimeout(r, ms));

/** True while a process with this id exists. */
export function alive(pid: number): boolean {
  try {
    process.kill(pid, 0);
    return true;
  } catch (error) {
    return (error as NodeJS.ErrnoException).code === "EPERM";
  }
}

/** True once the process has exited: no such pid, or a zombie waiting to be reaped. */
export function exited(pid: number): boolean {
  if (!alive(pid)) return true;
  try {
    const stat = fs.readFileSync(`/proc/${pid}/stat`, "utf8");
    return stat.slice(stat.lastIndexOf(")") + 2, stat.lastIndexOf(")") + 3) === "Z";
  } catch {
    return true;
  }
}

/** The command line of a process (empty when it is gone), to check a recorded pid is still ours. */
function cmdline(pid: number): string {
  try {
    return fs.readFileSync(`/proc/${pid}/cmdline`, "utf8").replace(/\0/g, " ");
  } catch {
    return "";
  }
}

/**
 * Starts a long-running process with stdout and stderr appended to `logFile`.
 * `detached` lets it outlive this process (`keelson up`). Returns its pid.
 */
export function startProcess(command: string, args: string[], logFile: string, detached: boolean): number {
  const fd = fs.openSync(logFile, "a");
  try {
    const child = spawn(command, args, { stdio: ["ignore", fd, fd], detached });
    if (child.pid === undefined) throw new KeelsonError({ code: "INTERNAL", message: `cannot start ${command}` });
    if (detached) child.unref();
    else child.on("error", () => undefined);
    return child.pid;
  } finally {
    fs.closeSync(fd);
  }
}

/**
 * Stops a process we started, by its recorded pid, only while its command
 * line still contains `expect` (a reused pid is left alone): SIGTERM, then
 * SIGKILL after `graceMs`. `graceMs` 0 is kill -9 at once.
 */
export async function stopProcess(pid: number, expect: string, graceMs: number): Promise<void> {
  const gone = (): boolean => exited(pid);
  if (gone() || !cmdline(pid).includes(expect)) return;
  process.kill(pid, graceMs === 0 ? "SIGKILL" : "SIGTERM");
  const deadline = Date.now() + graceMs;
  while (!gone() && Date.now() < deadline) await sleep(POLL_MS);
  if (!gone() && cmdline(pid).includes(expect)) process.kill(pid, "SIGKILL");
  for (let i = 0; i < 200 && !gone(); i++) await sleep(POLL_MS);
}

/** Waits for `file` to appear while `pid` lives; the file's text, or INTERNAL (it exited) or DEADLINE_EXCEEDED quoting the log. */
export async function waitForFile(file: string, pid: number, logFile: string, timeoutMs: number): Promise<string> {
  const deadline = Date.now() + timeoutMs;
  while (!fs.existsSync(file)) {
    if (exited(pid) || Date.now() > deadline) {
      const log = fs.existsSync(logFile) ? fs.readFileSync(logFile, "utf8").slice(-4000) : "";
      throw new KeelsonError({
        code: exited(pid) ? "INTERNAL" : "DEADLINE_EXCEEDED",
        message: `process ${pid} did not write ${file} (${exited(pid) ? "exited" : "timed out"}):\n${log}`,
      });
    }
    await sleep(POLL_MS);
  }
  return fs.readFileSync(file, "utf8");
}

/** Resolves once `host:port` accepts TCP connections; DEADLINE_EXCEEDED after `timeoutMs`. */
export async function waitForPort(host: string, port: number, timeoutMs: number): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  for (;;) {
    const ok = await new Promise<boolean>((resolve) => {
      const s = net.connect(port, host, () => {
        s.destroy();
        resolve(true);
      });
      s.on("error", () => resolve(false));
    });
    if (ok) return;
    if (Date.now() > deadline) {
      throw new KeelsonError({ code: "DEADLINE_EXCEEDED", message: `nothing listens on ${host}:${port} after ${timeoutMs} ms` });
    }
    await sleep(POLL_MS);
  }
}

/** A TCP port free on `host` now. */
export function freePort(host: string): Promise<number> {
  return new Promise((resolve, reject) => {
    const s = net.createServer();
    s.once("error", reject);
    s.listen(0, host, () => {
      const address = s.address();
      const port = typeof address === "object" && address ? address.port : 0;
      s.close(() => resolve(port));
    });
  });
}
