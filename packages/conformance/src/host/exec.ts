// Runs host tools (losetup, mkfs, mount, fsck) with bounded output and a
// timeout; failures become ConformanceError TOOL_FAILED with the tool's words.

import { spawn } from "node:child_process";
import { ConformanceError } from "../errors.js";

/** Most bytes of a tool's stdout or stderr kept. */
const MAX_OUTPUT_BYTES = 1 << 20;
const DEFAULT_TIMEOUT_MS = 60_000;

export interface ExecResult {
  code: number;
  stdout: string;
  stderr: string;
}

/** Runs `cmd args`; rejects with TOOL_FAILED on a non-zero exit unless `allowFail`, TOOL_MISSING when absent. */
export function exec(
  cmd: string,
  args: readonly string[],
  options: { timeoutMs?: number; allowFail?: boolean } = {},
): Promise<ExecResult> {
  return new Promise((resolve, reject) => {
    const child = spawn(cmd, args, { stdio: ["ignore", "pipe", "pipe"] });
    let stdout = "";
    let stderr = "";
    const keep = (have: string, more: Buffer): string => (have.length >= MAX_OUTPUT_BYTES ? have : have + more.toString());
    child.stdout.on("data", (d: Buffer) => {
      stdout = keep(stdout, d);
    });
    child.stderr.on("data", (d: Buffer) => {
      stderr = keep(stderr, d);
    });
    const timer = setTimeout(() => child.kill("SIGKILL"), options.timeoutMs ?? DEFAULT_TIMEOUT_MS);
    child.on("error", (error: NodeJS.ErrnoException) => {
      clearTimeout(timer);
      const code = error.code === "ENOENT" ? "TOOL_MISSING" : "TOOL_FAILED";
      reject(new ConformanceError({ code, message: `${cmd}: ${error.message}`, cause: error }));
    });
    child.on("close", (code, signal) => {
      clearTimeout(timer);
      const result = { code: code ?? -1, stdout, stderr };
      if (code === 0 || options.allowFail) return resolve(result);
      const why = signal ? `killed by ${signal}` : `exit ${code}`;
      reject(
        new ConformanceError({
          code: "TOOL_FAILED",
          message: `${cmd} ${args.join(" ")}: ${why}: ${(stderr || stdout).trim().slice(-2000)}`,
        }),
      );
    });
  });
}
