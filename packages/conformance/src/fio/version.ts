// The installed fio's version, for the report's environment.

import { execFileSync } from "node:child_process";

/** How long `fio --version` may take before fio counts as unusable. */
const VERSION_TIMEOUT_MS = 10_000;

/** `fio --version` ("fio-3.33"), or "" when fio is missing or does not answer. */
export function fioVersion(): string {
  try {
    return execFileSync("fio", ["--version"], {
      encoding: "utf8",
      timeout: VERSION_TIMEOUT_MS,
      stdio: ["ignore", "pipe", "ignore"],
    }).trim();
  } catch {
    return "";
  }
}
