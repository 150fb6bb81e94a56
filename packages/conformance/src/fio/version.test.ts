import { execFileSync } from "node:child_process";
import { describe, expect, it } from "vitest";
import { canRun } from "../testing/env.js";
import { fioVersion } from "./version.js";

describe("fioVersion", () => {
  it("is what the installed fio says it is", (t) => {
    if (!canRun({ tools: ["fio"] }, t.task.name)) return t.skip();
    const version = fioVersion();
    expect(version).toMatch(/^fio-\d+\.\d+/);
    expect(version).toBe(execFileSync("fio", ["--version"], { encoding: "utf8" }).trim());
  });

  it('is "" when fio is not on PATH', () => {
    const savedPath = process.env.PATH;
    process.env.PATH = "/nonexistent-keelson-path";
    try {
      expect(fioVersion()).toBe("");
    } finally {
      process.env.PATH = savedPath;
    }
  });
});
