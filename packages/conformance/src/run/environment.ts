// Facts of the machine and the run that go into every report.

import { execFileSync } from "node:child_process";
import fs from "node:fs";
import os from "node:os";
import { fioVersion } from "../fio/version.js";
import type { DurationSetting, Environment } from "../report/types.js";
import type { Target } from "../target/target.js";

/** This package's version, from its package.json (found from src/ and dist/ alike). */
export function suiteVersion(): string {
  const file = new URL("../../package.json", import.meta.url);
  return (JSON.parse(fs.readFileSync(file, "utf8")) as { version: string }).version;
}

/** The commit checked out where the run started, or "" outside a git checkout. */
function gitCommit(): string {
  try {
    return execFileSync("git", ["rev-parse", "HEAD"], { encoding: "utf8", stdio: ["ignore", "pipe", "ignore"] }).trim();
  } catch {
    return "";
  }
}

export function environment(target: Target, duration: DurationSetting): Environment {
  return {
    kernel: `${os.type()} ${os.release()}`,
    cpuCount: os.cpus().length,
    cpuModel: os.cpus()[0]?.model.trim() ?? "",
    memoryBytes: os.totalmem(),
    fioVersion: fioVersion(),
    nodeVersion: process.version,
    suiteVersion: suiteVersion(),
    gitCommit: gitCommit(),
    target: target.kind,
    targetDescription: { ...target.description },
    duration,
    root: process.getuid?.() === 0,
  };
}
