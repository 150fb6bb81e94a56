import { execFile } from "node:child_process";
import fs from "node:fs";
import { KeelsonError } from "@keelson/sdk";

/** Longest one host command (mkfs of a large volume, a mount) may take. */
const COMMAND_TIMEOUT_MS = 120_000;

/** Runs a host tool (never through a shell); its failure is INTERNAL with its stderr, its absence says which package it needs. */
export function run(command: string, args: string[], timeoutMs = COMMAND_TIMEOUT_MS): Promise<string> {
  return new Promise((resolve, reject) => {
    execFile(command, args, { timeout: timeoutMs, maxBuffer: 4 * 1024 * 1024 }, (error, stdout, stderr) => {
      if (!error) return resolve(stdout);
      const missing = (error as NodeJS.ErrnoException).code === "ENOENT";
      reject(
        new KeelsonError({
          code: "INTERNAL",
          message: missing
            ? `${command} is not installed on this node`
            : `${command} ${args.join(" ")} failed: ${stderr.trim() || error.message}`,
          cause: error,
        }),
      );
    });
  });
}

/** The exit code of a command that reports by its status (blkid: 2 = nothing found). */
export function exitCode(command: string, args: string[]): Promise<number> {
  return new Promise((resolve) => {
    execFile(command, args, { timeout: COMMAND_TIMEOUT_MS }, (error) => {
      const code = (error as (NodeJS.ErrnoException & { code?: number | string }) | null)?.code;
      resolve(error ? (typeof code === "number" ? code : -1) : 0);
    });
  });
}

/** A mountinfo field with its octal escapes (spaces and the like) decoded. */
function unescapeMountField(field: string): string {
  return field.replace(/\\([0-7]{3})/g, (_, o: string) => String.fromCharCode(Number.parseInt(o, 8)));
}

/** What is mounted at `target` now (the last mount there wins), or null: from /proc/self/mountinfo, so a bind mount counts. */
export function mountAt(target: string): { fsType: string; readOnly: boolean } | null {
  const resolved = fs.existsSync(target) ? fs.realpathSync(target) : target;
  let found: { fsType: string; readOnly: boolean } | null = null;
  for (const line of fs.readFileSync("/proc/self/mountinfo", "utf8").split("\n")) {
    // Fields: id parent major:minor root mount-point mount-options [optional...] - fstype source super-options.
    const fields = line.split(" ");
    if (fields[4] === undefined || unescapeMountField(fields[4]) !== resolved) continue;
    const dash = fields.indexOf("-", 6);
    found = { fsType: fields[dash + 1] ?? "", readOnly: (fields[5] ?? "").split(",").includes("ro") };
  }
  return found;
}

/** Whether `target` is a mount point now (from /proc/self/mountinfo, so a stale or bind mount counts). */
export function isMounted(target: string): boolean {
  return mountAt(target) !== null;
}
