import { type ChildProcess, spawn } from "node:child_process";
import fs from "node:fs";
import os from "node:os";
import path from "node:path";
import { afterEach, beforeEach, describe, expect, it } from "vitest";
import { ConformanceError } from "../errors.js";
import { canRun } from "../testing/env.js";
import type { LiveSample } from "../ui/progress.js";
import { filesystemJobPath } from "./job-file.js";
import { benchProfile, profileJob } from "./profiles.js";
import { runFio } from "./runner.js";
import type { FioResult, FioSideResult } from "./types.js";

const MIB = 1024 * 1024;
const sleep = (ms: number) => new Promise((resolve) => setTimeout(resolve, ms));

let dir = "";
beforeEach(() => {
  dir = fs.mkdtempSync(path.join(os.tmpdir(), "keelson-fio-"));
});
afterEach(() => {
  fs.rmSync(dir, { recursive: true, force: true });
});

/** nbdkit serving a 256 MiB memory disk on a unix socket in `dir`. */
async function startNbdkit(): Promise<{ uri: string; child: ChildProcess; stop: () => Promise<void> }> {
  const socket = path.join(dir, "nbd.sock");
  const child = spawn("nbdkit", ["-f", "-U", socket, "memory", "256M"], { stdio: ["ignore", "ignore", "pipe"] });
  const exited = new Promise<void>((resolve) => child.once("close", () => resolve()));
  const stop = async () => {
    if (child.exitCode === null && child.signalCode === null) {
      child.kill("SIGCONT");
      child.kill("SIGTERM");
    }
    await exited;
  };
  for (let i = 0; i < 200 && !fs.existsSync(socket); i++) {
    if (child.exitCode !== null) break;
    await sleep(25);
  }
  if (!fs.existsSync(socket)) {
    await stop();
    throw new Error("nbdkit did not create its socket");
  }
  return { uri: `nbd+unix:///?socket=${socket}`, child, stop };
}

/** fio processes whose parent is this test process (the runner's children). */
function fioChildren(): number[] {
  const pids: number[] = [];
  for (const entry of fs.readdirSync("/proc")) {
    if (!/^\d+$/.test(entry)) continue;
    try {
      const stat = fs.readFileSync(`/proc/${entry}/stat`, "utf8");
      const comm = stat.slice(stat.indexOf("(") + 1, stat.lastIndexOf(")"));
      const fields = stat.slice(stat.lastIndexOf(")") + 2).split(" ");
      // fields[0] is the state; a zombie has exited already.
      if (comm === "fio" && fields[1] === String(process.pid) && fields[0] !== "Z") pids.push(Number(entry));
    } catch {
      // The process ended while we looked.
    }
  }
  return pids;
}

function expectAscending(side: FioSideResult): void {
  const pct = side.percentiles.map((p) => p.percentile);
  expect(pct).toEqual([1, 5, 10, 20, 30, 40, 50, 60, 70, 80, 90, 95, 99, 99.5, 99.9, 99.95, 99.99]);
  for (let i = 1; i < side.percentiles.length; i++) {
    expect(side.percentiles[i]!.latencyUs).toBeGreaterThanOrEqual(side.percentiles[i - 1]!.latencyUs);
  }
  expect(side.percentiles[0]!.latencyUs).toBeGreaterThan(0);
  expect(side.maxUs).toBeGreaterThanOrEqual(side.percentiles.at(-1)!.latencyUs);
}

async function expectRejects(promise: Promise<unknown>, code: string): Promise<ConformanceError> {
  const error = await promise.then(
    () => undefined,
    (e: unknown) => e,
  );
  expect(error).toBeInstanceOf(ConformanceError);
  expect((error as ConformanceError).code).toBe(code);
  return error as ConformanceError;
}

describe("runFio", () => {
  it("filesystem: a time-based randread on a temp file reports IOPS, ascending percentiles and a second-by-second series", async (t) => {
    if (!canRun({ tools: ["fio"] }, t.task.name)) return t.skip();
    const samples: LiveSample[] = [];
    const job = {
      name: "fs-randread",
      rw: "randread",
      blockSizeBytes: 4096,
      iodepth: 4,
      sizeBytes: 16 * MIB,
      runtimeS: 3,
    } as const;
    const r = await runFio({
      dataPath: { kind: "filesystem", mountPath: dir, fsType: "ext4" },
      job,
      workDir: path.join(dir, "work"),
      onSample: (s) => samples.push(s),
    });
    expect(fs.statSync(filesystemJobPath(dir, job.name)).size).toBe(16 * MIB);
    expect(fs.existsSync(path.join(dir, "work", "fs-randread.fio"))).toBe(true);
    expect(r.read.iops).toBeGreaterThan(0);
    expect(r.read.ioBytes).toBeGreaterThan(0);
    expect(r.write.ioBytes).toBe(0);
    expect(r.errors).toBe(0);
    // fio's own CPU: a busy 3 s of reads uses some, and never more than its one thread can.
    expect(r.cpuPercent).not.toBeNull();
    const cpu = (r.cpuPercent?.user ?? 0) + (r.cpuPercent?.system ?? 0);
    expect(cpu).toBeGreaterThan(0);
    expect(cpu).toBeLessThanOrEqual(100);
    expectAscending(r.read);
    expectSeries(r, 3, r.read.ioBytes / 4096);
    expect(samples.length).toBeGreaterThanOrEqual(2);
    expect(samples.every((s) => s.phase === "fs-randread")).toBe(true);
    expect(samples.some((s) => s.iops > 0 && s.latencyUs > 0)).toBe(true);
    expect(samples.at(-1)!.remainingS).toBe(0);
  });

  it("filesystem: a verified write reads every block back and finds no mismatch", async (t) => {
    if (!canRun({ tools: ["fio"] }, t.task.name)) return t.skip();
    const r = await runFio({
      dataPath: { kind: "filesystem", mountPath: dir, fsType: "ext4" },
      job: { name: "fs-verify", rw: "randwrite", blockSizeBytes: 4096, iodepth: 8, sizeBytes: 8 * MIB, verify: true },
      workDir: dir,
    });
    expect(r.errors).toBe(0);
    expect(r.write.ioBytes).toBe(8 * MIB);
    // The verify pass reads back each block written, once (the random map is on).
    expect(r.read.ioBytes).toBe(8 * MIB);
  });

  it("nbd: the mixed profile over nbdkit reports both directions, and the ramp second stays in the series", async (t) => {
    if (!canRun({ tools: ["fio", "nbdkit"] }, t.task.name)) return t.skip();
    const nbd = await startNbdkit();
    try {
      const job = profileJob(benchProfile("mixed-70-30-4k-qd1"), { runtimeS: 3, rampS: 1, sizeBytes: 64 * MIB, numjobs: 2 });
      const r = await runFio({ dataPath: { kind: "nbd", uri: nbd.uri }, job, workDir: dir });
      expect(r.read.iops).toBeGreaterThan(0);
      expect(r.write.iops).toBeGreaterThan(0);
      // rwmixread=70: about 70% of the IOs are reads.
      const readShare = r.read.ioBytes / (r.read.ioBytes + r.write.ioBytes);
      expect(readShare).toBeGreaterThan(0.6);
      expect(readShare).toBeLessThan(0.8);
      expectAscending(r.read);
      expectAscending(r.write);
      // The figures exclude the ramp second; the series includes it.
      expectSeries(r, 4, undefined);
    } finally {
      await nbd.stop();
    }
  });

  it("nbd stall: nbdkit stopped for 2 s shows as seconds with no completed IOs in the series", async (t) => {
    if (!canRun({ tools: ["fio", "nbdkit"] }, t.task.name)) return t.skip();
    const nbd = await startNbdkit();
    const samples: LiveSample[] = [];
    try {
      const run = runFio({
        dataPath: { kind: "nbd", uri: nbd.uri },
        job: { name: "stall", rw: "randwrite", blockSizeBytes: 4096, iodepth: 4, sizeBytes: 64 * MIB, runtimeS: 7 },
        workDir: dir,
        onSample: (s) => samples.push(s),
      });
      await sleep(2500);
      const stoppedAtMs = Date.now();
      nbd.child.kill("SIGSTOP");
      await sleep(2000);
      nbd.child.kill("SIGCONT");
      const resumedAtMs = Date.now();
      const r = await run;
      const series = r.iopsPerSecond;
      const sorted = [...series].sort((a, b) => a - b);
      const median = sorted[Math.floor(sorted.length / 2)]!;
      expect(median).toBeGreaterThan(0);
      // The seconds wholly inside the stop: nothing completed in them.
      const first = Math.ceil((stoppedAtMs - r.startedAtMs) / 1000);
      const last = Math.floor((resumedAtMs - r.startedAtMs) / 1000) - 1;
      expect(last).toBeGreaterThanOrEqual(first);
      for (let s = first; s <= last; s++) expect(series[s]!).toBeLessThanOrEqual(median * 0.02);
      // Outside the stall, I/O ran: the seconds before it are busy.
      expect(series[first - 2]!).toBeGreaterThan(median * 0.5);
      // Live samples said so while it happened (fio itself printed nothing then).
      expect(samples.some((s) => s.iops === 0 && s.elapsedS * 1000 > stoppedAtMs - r.startedAtMs)).toBe(true);
    } finally {
      await nbd.stop();
    }
  });

  it("abort: rejects CANCELLED and leaves no fio process, also when fio is blocked in I/O", async (t) => {
    if (!canRun({ tools: ["fio", "nbdkit"] }, t.task.name)) return t.skip();
    const nbd = await startNbdkit();
    try {
      const controller = new AbortController();
      const run = runFio({
        dataPath: { kind: "nbd", uri: nbd.uri },
        job: { name: "abort", rw: "randread", blockSizeBytes: 4096, iodepth: 1, runtimeS: 60 },
        workDir: dir,
        signal: controller.signal,
        onSample: () => controller.abort(),
      });
      await expectRejects(run, "CANCELLED");
      expect(fioChildren()).toEqual([]);

      // A job blocked in I/O does not exit on SIGTERM; the runner must SIGKILL it.
      const blocked = new AbortController();
      const stalled = runFio({
        dataPath: { kind: "nbd", uri: nbd.uri },
        job: { name: "abort-blocked", rw: "randwrite", blockSizeBytes: 4096, iodepth: 4, runtimeS: 60 },
        workDir: dir,
        signal: blocked.signal,
      });
      await sleep(1500);
      nbd.child.kill("SIGSTOP");
      await sleep(200);
      const abortedAtMs = Date.now();
      blocked.abort();
      await expectRejects(stalled, "CANCELLED");
      expect(Date.now() - abortedAtMs).toBeLessThan(6000);
      expect(fioChildren()).toEqual([]);
    } finally {
      await nbd.stop();
    }
  });

  it("an already aborted signal rejects CANCELLED without starting fio", async () => {
    const controller = new AbortController();
    controller.abort();
    const job = { name: "never", rw: "read", blockSizeBytes: 4096, iodepth: 1 } as const;
    await expectRejects(
      runFio({ dataPath: { kind: "filesystem", mountPath: dir, fsType: "ext4" }, job, workDir: dir, signal: controller.signal }),
      "CANCELLED",
    );
    expect(fs.existsSync(filesystemJobPath(dir, "never"))).toBe(false);
  });

  it("bad job: fio failing to connect rejects TOOL_FAILED with fio's message", async (t) => {
    if (!canRun({ tools: ["fio"] }, t.task.name)) return t.skip();
    const uri = `nbd+unix:///?socket=${path.join(dir, "no-such.sock")}`;
    const job = { name: "bad", rw: "read", blockSizeBytes: 4096, iodepth: 1, sizeBytes: MIB } as const;
    const error = await expectRejects(runFio({ dataPath: { kind: "nbd", uri }, job, workDir: dir }), "TOOL_FAILED");
    expect(error.message).toMatch(/fio bad exited with code 1: .*nbd_connect_uri.*No such file or directory/s);
    // failOnError false hands back what fio reported: nothing was read.
    const r = await runFio({ dataPath: { kind: "nbd", uri }, job, workDir: dir, failOnError: false });
    expect(r.read.ioBytes).toBe(0);
    expect(r.iopsPerSecond.every((n) => n === 0)).toBe(true);
  });

  it("an invalid job rejects INVALID_ARGUMENT naming the field, before fio runs", async () => {
    const job = { name: "odd", rw: "randread", blockSizeBytes: 1000, iodepth: 1 } as const;
    const error = await expectRejects(
      runFio({ dataPath: { kind: "nbd", uri: "nbd://x" }, job, workDir: dir }),
      "INVALID_ARGUMENT",
    );
    expect(error.message).toContain("blockSizeBytes 1000");
  });

  it("fio missing from PATH rejects TOOL_MISSING", async () => {
    const savedPath = process.env.PATH;
    process.env.PATH = dir;
    try {
      const job = { name: "nofio", rw: "read", blockSizeBytes: 4096, iodepth: 1, sizeBytes: MIB } as const;
      const error = await expectRejects(
        runFio({ dataPath: { kind: "filesystem", mountPath: dir, fsType: "ext4" }, job, workDir: dir }),
        "TOOL_MISSING",
      );
      expect(error.message).toContain("fio is not installed");
    } finally {
      process.env.PATH = savedPath;
    }
  });
});

/** The series covers the run second by second and adds up to the IOs fio reported. */
function expectSeries(r: FioResult, seconds: number, totalIos: number | undefined): void {
  const series = r.iopsPerSecond;
  expect(series.length).toBeGreaterThanOrEqual(seconds - 1);
  expect(series.length).toBeLessThanOrEqual(seconds + 2);
  expect(series.every((n) => Number.isInteger(n) && n >= 0)).toBe(true);
  expect(series.filter((n) => n > 0).length).toBeGreaterThanOrEqual(seconds - 1);
  // The last, partial second is left out, so the series holds a little less than the total.
  if (totalIos !== undefined) {
    const sum = series.reduce((a, b) => a + b, 0);
    expect(sum).toBeLessThanOrEqual(totalIos * 1.01);
    expect(sum).toBeGreaterThan(totalIos * ((seconds - 1) / (seconds + 1)));
  }
  expect(r.startedAtMs).toBeLessThanOrEqual(Date.now() - r.durationMs + 50);
}
