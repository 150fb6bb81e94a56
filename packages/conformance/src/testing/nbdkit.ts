// nbdkit as a throwaway NBD server for tests: started on a Unix socket,
// ready once the socket accepts, stopped (or killed -9) on demand.

import { type ChildProcess, spawn } from "node:child_process";
import fs from "node:fs";
import net from "node:net";
import { ConformanceError } from "../errors.js";
import { formatNbdUri } from "../nbd/uri.js";

/** How long nbdkit may take to listen before the start fails. */
export const NBDKIT_START_TIMEOUT_MS = 10_000;
/** How much of nbdkit's stderr is kept for error messages. */
const MAX_STDERR_CHARS = 4_096;

/** Options of {@link startNbdkit}. */
export interface NbdkitOptions {
  /** Unix socket to listen on; a stale file there is removed first. */
  socketPath: string;
  /** Plugin and its arguments: ["memory", "64M"], ["file", "file=/tmp/disk.img"]. */
  plugin: string[];
  /** Filters, outermost first: ["delay"]; their parameters go in `plugin`. */
  filters?: string[];
}

/** A running nbdkit. */
export interface StartedNbdkit {
  readonly socketPath: string;
  /** nbd+unix URI of its (only) export. */
  readonly uri: string;
  readonly pid: number;
  /** Sends `signal` (SIGTERM by default) and resolves once nbdkit has exited. Idempotent. */
  stop(signal?: NodeJS.Signals): Promise<void>;
  [Symbol.asyncDispose](): Promise<void>;
}

function canConnect(socketPath: string): Promise<boolean> {
  return new Promise((resolve) => {
    const s = net.connect({ path: socketPath });
    s.once("connect", () => {
      s.destroy();
      resolve(true);
    });
    s.once("error", () => resolve(false));
  });
}

/** True once the process is gone, or never started (spawn failed: no pid). */
function isGone(child: ChildProcess): boolean {
  return child.exitCode !== null || child.signalCode !== null || child.pid === undefined;
}

function exited(child: ChildProcess): Promise<void> {
  if (isGone(child)) return Promise.resolve();
  return new Promise((resolve) => child.once("exit", () => resolve()));
}

async function waitListening(child: ChildProcess, socketPath: string, stderr: () => string): Promise<void> {
  const deadline = Date.now() + NBDKIT_START_TIMEOUT_MS;
  while (Date.now() < deadline) {
    if (isGone(child)) {
      throw new ConformanceError({
        code: "TOOL_FAILED",
        message: `nbdkit exited (${child.exitCode ?? child.signalCode ?? "never started"}) before listening: ${stderr()}`,
      });
    }
    if (fs.existsSync(socketPath) && (await canConnect(socketPath))) return;
    await new Promise((r) => setTimeout(r, 20));
  }
  child.kill("SIGKILL");
  throw new ConformanceError({
    code: "TOOL_FAILED",
    message: `nbdkit did not listen on ${socketPath} within ${NBDKIT_START_TIMEOUT_MS} ms: ${stderr()}`,
  });
}

/** Starts `nbdkit -f --exit-with-parent -U socketPath [filters] plugin...` and waits until it accepts connections. */
export async function startNbdkit(options: NbdkitOptions): Promise<StartedNbdkit> {
  fs.rmSync(options.socketPath, { force: true });
  const filters = (options.filters ?? []).map((f) => `--filter=${f}`);
  const child = spawn("nbdkit", ["-f", "--exit-with-parent", "-U", options.socketPath, ...filters, ...options.plugin], {
    stdio: ["ignore", "ignore", "pipe"],
  });
  let stderr = "";
  child.stderr?.on("data", (d: Buffer) => {
    stderr = (stderr + d.toString("utf8")).slice(-MAX_STDERR_CHARS);
  });
  child.on("error", (e) => {
    stderr += ` (spawn: ${e.message})`;
  });
  try {
    await waitListening(child, options.socketPath, () => stderr.trim());
  } catch (error) {
    child.kill("SIGKILL");
    await exited(child);
    throw error;
  }
  const stop = async (signal: NodeJS.Signals = "SIGTERM"): Promise<void> => {
    if (!isGone(child)) child.kill(signal);
    await exited(child);
    fs.rmSync(options.socketPath, { force: true });
  };
  return {
    socketPath: options.socketPath,
    uri: formatNbdUri({ transport: "unix", socketPath: options.socketPath, exportName: "" }),
    pid: child.pid ?? -1,
    stop,
    [Symbol.asyncDispose]: () => stop(),
  };
}
