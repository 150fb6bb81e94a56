import { execFileSync } from "node:child_process";

/** True when running as root (loop devices, mounts, namespaces). */
export const IS_ROOT = process.getuid?.() === 0;
/** CI sets CI=true: a skipped root or tool test is then a failure. */
export const IN_CI = process.env.CI === "true";

function hasTool(name: string): boolean {
  try {
    execFileSync("sh", ["-c", `command -v ${name}`], { stdio: "ignore" });
    return true;
  } catch {
    return false;
  }
}

/**
 * Whether a test that needs root and/or these tools can run. When it cannot,
 * it says so loudly; under CI=true that is an error instead of a skip.
 */
export function canRun(what: { root?: boolean; tools?: string[] }, testName: string): boolean {
  const missing: string[] = [];
  if (what.root && !IS_ROOT) missing.push("root");
  for (const t of what.tools ?? []) if (!hasTool(t)) missing.push(t);
  if (missing.length === 0) return true;
  const message = `"${testName}" needs ${missing.join(", ")}`;
  if (IN_CI) throw new Error(`${message}; CI=true does not allow skipping it`);
  console.warn(`\n!!!!!!!! SKIPPED: ${message} !!!!!!!!\n`);
  return false;
}
