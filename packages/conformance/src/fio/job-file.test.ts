import { execFileSync } from "node:child_process";
import fs from "node:fs";
import os from "node:os";
import path from "node:path";
import { afterEach, beforeEach, describe, expect, it } from "vitest";
import { ConformanceError } from "../errors.js";
import type { DataPath } from "../target/target.js";
import { canRun } from "../testing/env.js";
import { DEFAULT_FILESYSTEM_FILE_BYTES, filesystemJobPath, fioJobFile } from "./job-file.js";
import type { FioJobSpec } from "./types.js";

const JOB: FioJobSpec = { name: "randread-4k-qd32", rw: "randread", blockSizeBytes: 4096, iodepth: 32 };

let dir = "";
beforeEach(() => {
  dir = fs.mkdtempSync(path.join(os.tmpdir(), "keelson-jobfile-"));
});
afterEach(() => {
  fs.rmSync(dir, { recursive: true, force: true });
});

/** The job file's options as fio's own parser reads them (`--parse-only` plus `--showcmd`). */
function fioReads(text: string): string {
  const file = path.join(dir, "job.fio");
  fs.writeFileSync(file, text);
  execFileSync("fio", ["--parse-only", file], { stdio: "pipe" });
  return execFileSync("fio", ["--showcmd", file], { encoding: "utf8" });
}

function lines(text: string): string[] {
  return text.split("\n").filter(Boolean);
}

describe("fioJobFile", () => {
  it("nbd: the nbd engine on the URI, one connection per job, fio accepts it", (t) => {
    if (!canRun({ tools: ["fio"] }, t.task.name)) return t.skip();
    const text = fioJobFile({ kind: "nbd", uri: "nbd+unix:///vol?socket=/run/k.sock" }, { ...JOB, numjobs: 4 });
    expect(lines(text)).toEqual(
      expect.arrayContaining(["ioengine=nbd", "uri=nbd+unix:///vol?socket=/run/k.sock", "numjobs=4", "thread=1"]),
    );
    expect(text).not.toContain("filename=");
    expect(text).not.toContain("size=");
    const cmd = fioReads(text);
    expect(cmd).toContain("--ioengine=nbd");
    expect(cmd).toContain("--numjobs=4");
  });

  it("block: libaio with O_DIRECT on the device, region and rate as given", (t) => {
    if (!canRun({ tools: ["fio"] }, t.task.name)) return t.skip();
    const job = { ...JOB, offsetBytes: 1048576, sizeBytes: 8388608, rateIops: 500 };
    const text = fioJobFile({ kind: "block", devicePath: "/dev/nbd0" }, job);
    expect(lines(text)).toEqual(
      expect.arrayContaining([
        "ioengine=libaio",
        "direct=1",
        "filename=/dev/nbd0",
        "offset=1048576",
        "size=8388608",
        "rate_iops=500",
      ]),
    );
    expect(fioReads(text)).toContain("--rate_iops=500");
  });

  it("filesystem: a file named for the job in the mount, 256 MiB unless sized, and fio creates it there", (t) => {
    if (!canRun({ tools: ["fio"] }, t.task.name)) return t.skip();
    const mount: DataPath = { kind: "filesystem", mountPath: dir, fsType: "ext4" };
    expect(fioJobFile(mount, JOB)).toContain(`size=${DEFAULT_FILESYSTEM_FILE_BYTES}\n`);
    expect(fioJobFile(mount, JOB, { defaultFileSizeBytes: 1048576 })).toContain("size=1048576\n");
    // A colon in the path is escaped (fio reads "a:b" as two files); the file lands at the literal path.
    const colonDir = path.join(dir, "a:b");
    fs.mkdirSync(colonDir);
    const job: FioJobSpec = { name: "seq", rw: "write", blockSizeBytes: 65536, iodepth: 2, sizeBytes: 1048576 };
    const text = fioJobFile({ kind: "filesystem", mountPath: colonDir, fsType: "xfs" }, job);
    expect(text).toContain(`filename=${dir}/a\\:b/conformance-seq.dat\n`);
    const file = path.join(dir, "job.fio");
    fs.writeFileSync(file, text);
    execFileSync("fio", ["--output-format=json", file], { stdio: "pipe" });
    expect(fs.statSync(filesystemJobPath(colonDir, "seq")).size).toBe(1048576);
  });

  it("time-based runs, the fixed options and the percentile list", () => {
    const text = fioJobFile({ kind: "nbd", uri: "nbd://h/v" }, { ...JOB, runtimeS: 30, rampS: 2 });
    expect(lines(text)).toEqual(
      expect.arrayContaining([
        "time_based=1",
        "runtime=30",
        "ramp_time=2",
        "norandommap=1",
        "randrepeat=0",
        "group_reporting=1",
        "percentile_list=1:5:10:20:30:40:50:60:70:80:90:95:99:99.5:99.9:99.95:99.99",
        "[randread-4k-qd32]",
        "rw=randread",
        "bs=4096",
        "iodepth=32",
      ]),
    );
    const sized = fioJobFile({ kind: "nbd", uri: "nbd://h/v" }, JOB);
    expect(sized).not.toContain("time_based");
    expect(sized).not.toContain("ramp_time");
  });

  it("verify: crc32c headers checked fatally, with the random map on", () => {
    const text = fioJobFile({ kind: "nbd", uri: "nbd://h/v" }, { ...JOB, rw: "randwrite", verify: true });
    expect(lines(text)).toEqual(expect.arrayContaining(["verify=crc32c", "verify_fatal=1", "do_verify=1", "randrepeat=0"]));
    expect(text).not.toContain("norandommap");
  });

  it("mixed: rwmixread from readPercent", () => {
    const text = fioJobFile({ kind: "nbd", uri: "nbd://h/v" }, { ...JOB, rw: "randrw", readPercent: 70 });
    expect(lines(text)).toEqual(expect.arrayContaining(["rw=randrw", "rwmixread=70"]));
  });

  it("fsyncEvery: a flush every N writes, as fio's fsync=N, which fio accepts", (t) => {
    const text = fioJobFile({ kind: "nbd", uri: "nbd://h/v" }, { ...JOB, rw: "randwrite", iodepth: 1, fsyncEvery: 16 });
    expect(lines(text)).toEqual(expect.arrayContaining(["rw=randwrite", "iodepth=1", "fsync=16"]));
    expect(fioJobFile({ kind: "nbd", uri: "nbd://h/v" }, JOB)).not.toContain("fsync");
    if (!canRun({ tools: ["fio"] }, t.task.name)) return t.skip();
    const block = fioJobFile(
      { kind: "block", devicePath: "/dev/nbd0" },
      { ...JOB, rw: "randrw", readPercent: 50, fsyncEvery: 1 },
    );
    expect(fioReads(block)).toContain("--fsync=1");
  });

  it("fsyncEvery: fio flushes a file after every 4th write", (t) => {
    if (!canRun({ tools: ["fio"] }, t.task.name)) return t.skip();
    const mount: DataPath = { kind: "filesystem", mountPath: dir, fsType: "ext4" };
    const job: FioJobSpec = { name: "flush4", rw: "write", blockSizeBytes: 4096, iodepth: 1, sizeBytes: 65536, fsyncEvery: 4 };
    const file = path.join(dir, "job.fio");
    fs.writeFileSync(file, fioJobFile(mount, job));
    const out = JSON.parse(execFileSync("fio", ["--output-format=json", file], { encoding: "utf8" }));
    // 16 writes of 4 KiB. fio sends the flush that follows every 4th write as it asks for the next
    // I/O, so the run ends after the 16th write without one: 3 flushes, after writes 4, 8 and 12.
    expect(out.jobs[0].write.total_ios).toBe(16);
    expect(out.jobs[0].sync.total_ios).toBe(3);
  });

  it.each([
    [{ name: "has space" }, "job name"],
    [{ name: "../up" }, "job name"],
    [{ blockSizeBytes: 1000 }, "blockSizeBytes 1000 is not a multiple of 512"],
    [{ iodepth: 0 }, "iodepth 0 is not an integer in [1, 1024]"],
    [{ numjobs: 65 }, "numjobs 65"],
    [{ readPercent: 70 }, 'readPercent needs rw "randrw" or "rw"'],
    [{ sizeBytes: 1024 }, "sizeBytes 1024 is not an integer in [4096"],
    [{ offsetBytes: 100 }, "offsetBytes 100 is not a multiple of 512"],
    [{ runtimeS: 1.5 }, "runtimeS 1.5"],
    [{ rateIops: 0 }, "rateIops 0"],
    [{ rw: "randwrite", fsyncEvery: 0 }, "fsyncEvery 0 is not an integer in [1, 1000000]"],
    [{ rw: "randwrite", fsyncEvery: -16 }, "fsyncEvery -16 is not an integer"],
    [{ rw: "write", fsyncEvery: 2.5 }, "fsyncEvery 2.5 is not an integer"],
    [{ rw: "randwrite", fsyncEvery: Number.NaN }, "fsyncEvery NaN"],
    [{ fsyncEvery: 16 }, 'fsyncEvery needs a writing rw ("write", "randwrite", "randrw" or "rw"), not "randread"'],
  ] as [Partial<FioJobSpec>, string][])("rejects %j with INVALID_ARGUMENT naming the value", (change, message) => {
    const error = catchError(() => fioJobFile({ kind: "nbd", uri: "nbd://h/v" }, { ...JOB, ...change }));
    expect(error.code).toBe("INVALID_ARGUMENT");
    expect(error.message).toContain(message);
  });

  it("rejects a data path that would end its line early", () => {
    const error = catchError(() => fioJobFile({ kind: "block", devicePath: "/dev/x\nexec_prerun=rm" }, JOB));
    expect(error.code).toBe("INVALID_ARGUMENT");
    expect(error.message).toContain("dataPath.devicePath");
  });
});

function catchError(fn: () => unknown): ConformanceError {
  try {
    fn();
  } catch (error) {
    if (error instanceof ConformanceError) return error;
    throw error;
  }
  throw new Error("expected a ConformanceError");
}
