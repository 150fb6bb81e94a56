import { execFileSync } from "node:child_process";

/** True when running as root (loop devices, mounts, namespaces). */
export const IS_ROOT = process.getuid?.() === 0;

/**
 * Whether a value of the `CI` environment variable means "this is a CI run".
 * CI systems set it to different things (`true`, `1`, `yes`, a provider name),
 * so any non-empty value counts, except `false`, `0` and `no` (any case, spaces
 * ignored), which people write to turn CI behaviour off for a local run.
 * Unset or empty is not CI. Kept identical to the conformance package's copy
 * and to scripts/vitest-skip-guard.mjs (a package may not import another's tests).
 */
export function isCiValue(value: string | undefined): boolean {
  const v = (value ?? "").trim().toLowerCase();
  return v !== "" && v !== "false" && v !== "0" && v !== "no";
}

/** Under CI a test that cannot run is a failure, never a skip. */
export const IN_CI = isCiValue(process.env.CI);

function hasTool(name: string): boolean {
  try {
    execFileSync("sh", ["-c", `command -v ${name}`], { stdio: "ignore" });
    return true;
  } catch {
    return false;
  }
}

/** What a test needs from the host. */
export interface Needs {
  root?: boolean;
  tools?: string[];
}

/**
 * The one way a test that needs root and/or tools decides to skip. When the host
 * lacks something it says so loudly and returns false (the caller then calls
 * `t.skip()`, so the report counts a skip, not a pass); under CI it throws
 * instead, so the test fails. The vitest reporter scripts/vitest-skip-guard.mjs
 * also fails a CI run that skipped anything, so an `it.skip` cannot hide either.
 */
export function canRun(what: Needs, testName: string, inCi: boolean = IN_CI): boolean {
  const missing: string[] = [];
  if (what.root && !IS_ROOT) missing.push("root");
  for (const t of what.tools ?? []) if (!hasTool(t)) missing.push(t);
  if (missing.length === 0) return true;
  const message = `"${testName}" needs ${missing.join(", ")}`;
  if (inCi) throw new Error(`${message}; CI=${JSON.stringify(process.env.CI ?? "")} does not allow skipping it`);
  console.warn(`\n!!!!!!!! SKIPPED: ${message} !!!!!!!!\n`);
  return false;
}
