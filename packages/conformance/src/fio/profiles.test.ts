import { execFileSync } from "node:child_process";
import fs from "node:fs";
import os from "node:os";
import path from "node:path";
import { describe, expect, it } from "vitest";
import { ConformanceError } from "../errors.js";
import { canRun } from "../testing/env.js";
import { fioJobFile } from "./job-file.js";
import { BENCH_PROFILES, benchProfile, profileJob } from "./profiles.js";

describe("BENCH_PROFILES", () => {
  it("are the six bench workloads plus the 70/30 mix, uniquely named, each described in one line", () => {
    expect(BENCH_PROFILES.map((p) => p.name)).toEqual([
      "randread-4k-qd1",
      "randread-4k-qd32",
      "randwrite-4k-qd1",
      "randwrite-4k-qd32",
      "read-1m-qd8",
      "write-1m-qd8",
      "mixed-70-30-4k-qd1",
    ]);
    for (const p of BENCH_PROFILES) {
      expect(p.description).toMatch(/^[A-Z0-9].*\.$/);
      expect(p.description).not.toContain("\n");
    }
    expect(benchProfile("mixed-70-30-4k-qd1")).toMatchObject({ rw: "randrw", readPercent: 70, blockSizeBytes: 4096, iodepth: 1 });
  });

  it("every profile, given a runtime and region, is a job fio runs on a file", (t) => {
    if (!canRun({ tools: ["fio"] }, t.task.name)) return t.skip();
    const dir = fs.mkdtempSync(path.join(os.tmpdir(), "keelson-profiles-"));
    try {
      for (const profile of BENCH_PROFILES) {
        // size-based and small: each profile does its region once, so this stays quick.
        const job = profileJob(profile, { sizeBytes: 2 << 20 });
        const file = path.join(dir, `${profile.name}.fio`);
        fs.writeFileSync(file, fioJobFile({ kind: "filesystem", mountPath: dir, fsType: "ext4" }, job));
        const out = JSON.parse(execFileSync("fio", ["--output-format=json", file], { encoding: "utf8" }));
        const { read, write } = out.jobs[0];
        expect(read.io_bytes + write.io_bytes).toBe(2 << 20);
        if (profile.rw.includes("read")) expect(read.io_bytes).toBeGreaterThan(0);
        if (profile.rw.includes("write") || profile.rw === "randrw") expect(write.io_bytes).toBeGreaterThan(0);
      }
    } finally {
      fs.rmSync(dir, { recursive: true, force: true });
    }
  });

  it("profileJob sets length and region, and leaves the profile itself alone", () => {
    const profile = benchProfile("randread-4k-qd32");
    const job = profileJob(profile, { runtimeS: 10, rampS: 1, sizeBytes: 512 << 20 });
    expect(job).toEqual({
      name: "randread-4k-qd32",
      rw: "randread",
      blockSizeBytes: 4096,
      iodepth: 32,
      runtimeS: 10,
      rampS: 1,
      sizeBytes: 512 << 20,
    });
    expect(profile).not.toHaveProperty("runtimeS");
    expect(profileJob(profile)).not.toHaveProperty("description");
  });

  it("profileJob carries a profile's fsyncEvery (bench's flush profile), and none when the profile has none", () => {
    const flush16 = { ...benchProfile("randwrite-4k-qd1"), name: "randwrite-4k-qd1-flush16", fsyncEvery: 16 };
    expect(profileJob(flush16, { runtimeS: 3 })).toMatchObject({ rw: "randwrite", iodepth: 1, fsyncEvery: 16, runtimeS: 3 });
    expect(profileJob(benchProfile("randwrite-4k-qd1"))).not.toHaveProperty("fsyncEvery");
  });

  it("an unknown name is INVALID_ARGUMENT listing the valid ones", () => {
    let error: unknown;
    try {
      benchProfile("randread-8k");
    } catch (e) {
      error = e;
    }
    expect(error).toBeInstanceOf(ConformanceError);
    expect((error as ConformanceError).code).toBe("INVALID_ARGUMENT");
    expect((error as ConformanceError).message).toContain('"randread-8k"; valid: randread-4k-qd1, randread-4k-qd32');
  });
});
