#!/usr/bin/env node
// Runs the bench profiles against keelson and, in the same run and on the same
// backing file (a sparse file on the host filesystem, prefilled afresh for each
// target and fsynced between targets), against its peers; prints one table and
// writes it as JSON, with the machine's facts (cpu model, cores, memory, kernel,
// node, fio and peer versions, runtime, load average), to bench/results/ (every
// run, git-ignored) and bench/baselines/bench-<N>cpu-<YYYY-MM-DD>.json (kept; a
// later run on the same day replaces it).
//
// Targets, in this order:
//   keelson             keelsond with its default disk I/O (--io auto: io_uring where it loads)
//   keelson-direct      keelsond with --direct-io on (O_DIRECT; needs io_uring)
//   keelson-threadpool  keelsond with --io threadpool (libuv's thread pool)
//   nbdkit-file         nbdkit's file plugin (buffered)
//   qemu-nbd            qemu-nbd --cache=none --aio=native (O_DIRECT)
//   raw-loop            a loop device over the file, --direct-io=on; fio with libaio, O_DIRECT
// Profiles: BENCH_PROFILES of @keelson/conformance, then bench's own EXTRA_PROFILES
// (randwrite-4k-qd1-flush16: 4 KiB random writes at qd1 with a flush every 16 writes).
// Columns: cache (whether the target's I/O goes through the host page cache, read from
// the server's open flags in /proc or the loop device's sysfs, not assumed: buffered, none,
// or mixed for keelson-direct, whose metadata fd is buffered), IOPS, MiB/s,
// p50/p99/p99.9/p99.99 completion latency of the direction that moved more data,
// keelson/peer (keelson's IOPS over the peer's, like with like: buffered keelson
// over nbdkit-file, keelson-direct over qemu-nbd and raw-loop, which bypass the page
// cache too) and keelson/keelson-threadpool.
//
//   npm run bench                      all profiles, all targets available here
//   BENCH_RUNTIME_S=5 npm run bench    shorter runs
//   BENCH_PROFILES=randread-4k-qd32 BENCH_TARGETS=keelson,nbdkit-file npm run bench
//   npm run bench -- --profile         also a V8 CPU profile of each keelsond for the same run
//                                      (bench/results/profile-<time>/, open in Chrome DevTools),
//                                      with its top functions by self time printed
import { spawn, spawnSync } from "node:child_process";
import fs from "node:fs";
import os from "node:os";
import path from "node:path";
import { fileURLToPath } from "node:url";
import { importBuilt, packageBin } from "./workspace.mjs";

const ROOT = path.dirname(path.dirname(fileURLToPath(import.meta.url)));
const MIB = 1024 * 1024;
const RUNTIME_S = Number(process.env.BENCH_RUNTIME_S ?? 10);
const REGION_MIB = Number(process.env.BENCH_REGION_MIB ?? 512);
const POOL_MIB = REGION_MIB + 256;
const RAMP_S = 1;
const ALL_TARGETS = ["keelson", "keelson-direct", "keelson-threadpool", "nbdkit-file", "qemu-nbd", "raw-loop"];
/** Targets compared against keelson in the keelson/peer column (keelson-threadpool has its own). */
const PEERS = ["nbdkit-file", "qemu-nbd", "raw-loop"];
/** `--profile`: where each keelsond writes its CPU profile (null: no profiling, the default). */
const PROFILE_DIR = process.argv.includes("--profile")
  ? path.join(ROOT, "bench", "results", `profile-${new Date().toISOString().replace(/[:.]/g, "-")}`)
  : null;
const TARGETS = (process.env.BENCH_TARGETS ?? ALL_TARGETS.join(",")).split(",").filter(Boolean);
/**
 * Bench's profiles beyond the conformance suite's BENCH_PROFILES (the suite's
 * latency checks do not run these), run after them.
 */
const EXTRA_PROFILES = [
  {
    name: "randwrite-4k-qd1-flush16",
    rw: "randwrite",
    blockSizeBytes: 4096,
    iodepth: 1,
    fsyncEvery: 16,
    description: "4 KiB random writes, one at a time, a flush (NBD FLUSH, fsync) after every 16: the price of durability.",
  },
];
/** Aborted on SIGINT: the running fio is stopped and everything started is cleaned up. */
const interrupted = new AbortController();
/** The conformance package's fio runner and profiles (loaded in main, once the build is checked). */
let fioKit;
/** Profile names to run, in BENCH_PROFILES then EXTRA_PROFILES order unless BENCH_PROFILES names them. */
let profiles = [];
let workDir = "";

const has = (tool) => spawnSync("sh", ["-c", `command -v ${tool}`]).status === 0;
const sleep = (ms) => new Promise((r) => setTimeout(r, ms));
const children = [];
const cleanups = [];

function startChild(cmd, args) {
  const child = spawn(cmd, args, { stdio: ["ignore", "ignore", "pipe"] });
  let err = "";
  child.stderr.on("data", (d) => {
    err += d;
  });
  child.errText = () => err;
  children.push(child);
  return child;
}

async function stopChild(child) {
  if (child.exitCode !== null || child.signalCode !== null) return;
  child.kill("SIGTERM");
  for (let i = 0; i < 100 && child.exitCode === null && child.signalCode === null; i++) await sleep(50);
  if (child.exitCode === null && child.signalCode === null) child.kill("SIGKILL");
}

async function waitFor(file, child, what) {
  for (let i = 0; i < 400; i++) {
    if (fs.existsSync(file)) return;
    if (child.exitCode !== null) throw new Error(`${what} exited: ${child.errText()}`);
    await sleep(25);
  }
  throw new Error(`${what} did not start: ${child.errText()}`);
}

/** Runs one job through the conformance runner; bench's figures of it (a mixed job counts both directions). */
async function fio(target, job, onSample) {
  const r = await fioKit.runFio({ dataPath: target.dataPath, job, workDir, signal: interrupted.signal, onSample });
  // Percentiles of the direction that moved more data (the only one, but for a mix).
  const side = r.write.ioBytes > r.read.ioBytes ? r.write : r.read;
  const pct = (p) => side.percentiles.find((x) => x.percentile === p)?.latencyUs ?? 0;
  return {
    iops: r.read.iops + r.write.iops,
    mibps: (r.read.bytesPerSec + r.write.bytesPerSec) / MIB,
    p50Us: pct(50),
    p99Us: pct(99),
    p999Us: pct(99.9),
    p9999Us: pct(99.99),
  };
}

async function prefill(target) {
  // Reads must hit real data on every target (a thin volume would answer unwritten blocks without I/O).
  await fio(target, { name: "prefill", rw: "write", blockSizeBytes: MIB, iodepth: 8, sizeBytes: REGION_MIB * MIB });
}

/** All profiles bench knows: the suite's, then its own. */
function knownProfiles() {
  return [...fioKit.BENCH_PROFILES, ...EXTRA_PROFILES];
}

function profileNamed(name) {
  const profile = knownProfiles().find((p) => p.name === name);
  if (!profile)
    throw new Error(
      `unknown profile ${JSON.stringify(name)}: use ${knownProfiles()
        .map((p) => p.name)
        .join(", ")}`,
    );
  return profile;
}

/**
 * Runs every profile on `target` and returns what it learnt of the target's cache.
 * An NBD server may open the backing file only while a client is connected
 * (nbdkit's file plugin opens it per connection), so the cache is probed at start
 * and, until known, at each of fio's once-a-second samples.
 */
async function runProfiles(target, results) {
  let cache = target.probeCache();
  const probe = () => {
    cache ??= target.probeCache();
  };
  await prefill(target);
  for (const profile of profiles) {
    const job = fioKit.profileJob(profileNamed(profile), { sizeBytes: REGION_MIB * MIB, runtimeS: RUNTIME_S, rampS: RAMP_S });
    const r = await fio(target, job, probe);
    results.push({ target: target.name, profile, ...r });
    console.error(
      `  ${target.name.padEnd(18)} ${profile.padEnd(24)} ${r.iops.toFixed(0).padStart(8)} IOPS ${r.mibps.toFixed(1).padStart(8)} MiB/s p99 ${r.p99Us.toFixed(0)} us`,
    );
  }
  return {
    name: target.name,
    ...(target.facts ?? {}),
    ...(cache ?? { cache: "unknown", cacheHow: "the backing file was never seen open" }),
  };
}

/**
 * Whether process `pid` reads and writes `file` through the page cache: from the
 * flags of its open descriptors of it (/proc/PID/fdinfo). Undefined while it has none open.
 * Some with O_DIRECT and some without is "mixed" (keelsond --direct-io on: its volumes'
 * blocks on one, the pool's metadata on the other); none with O_DIRECT is buffered.
 */
function openFlagsCache(pid, file) {
  const real = fs.realpathSync(file);
  const fdDir = `/proc/${pid}/fd`;
  let direct = 0;
  let buffered = 0;
  let fds = [];
  try {
    fds = fs.readdirSync(fdDir);
  } catch {
    return undefined; // the process has gone; its runner reports why
  }
  for (const fd of fds) {
    let flags;
    try {
      if (fs.readlinkSync(path.join(fdDir, fd)) !== real) continue;
      flags = /^flags:\s+([0-7]+)$/m.exec(fs.readFileSync(`/proc/${pid}/fdinfo/${fd}`, "utf8"))?.[1];
    } catch {
      continue; // closed since the listing
    }
    if (flags === undefined) continue;
    if (Number.parseInt(flags, 8) & fs.constants.O_DIRECT) direct++;
    else buffered++;
  }
  if (buffered > 0 && direct > 0)
    return { cache: "mixed", cacheHow: `${direct} of ${buffered + direct} open fds with O_DIRECT, ${buffered} without` };
  if (buffered > 0) return { cache: "buffered", cacheHow: `${buffered} of ${buffered + direct} open fds without O_DIRECT` };
  if (direct > 0) return { cache: "none", cacheHow: `${direct} open fd(s), all O_DIRECT` };
  return undefined;
}

/** The backing file's dirty pages reach the disk before the next target starts, not during its run. */
function syncBacking(backing) {
  const fd = fs.openSync(backing, "r+");
  try {
    fs.fsyncSync(fd);
  } finally {
    fs.closeSync(fd);
  }
}

/** keelsond on `backing` with disk I/O `io` (auto or threadpool) and `args`; the target is named `name`. */
async function withKeelson(name, io, dir, backing, fn, args = []) {
  const ready = path.join(dir, `${name}.ready`);
  const profiling = PROFILE_DIR ? ["--cpu-prof", `--cpu-prof-dir=${PROFILE_DIR}`, `--cpu-prof-name=${name}.cpuprofile`] : [];
  const d = startChild(process.execPath, [
    ...profiling,
    packageBin("@keelson/engine", "keelsond"),
    "--io",
    io,
    "--pool",
    backing,
    "--force-format",
    "--grpc-listen",
    "127.0.0.1:0",
    "--nbd-listen",
    "",
    "--nbd-socket",
    path.join(dir, `${name}.sock`),
    "--ready-file",
    ready,
    ...args,
  ]);
  try {
    await waitFor(ready, d, "keelsond");
    const { grpcAddress, nbdSocket } = JSON.parse(fs.readFileSync(ready, "utf8"));
    const { createClient } = await importBuilt("@keelson/sdk");
    const client = createClient({ address: grpcAddress });
    let node;
    try {
      await client.createVolume({ name: "bench", sizeBytes: REGION_MIB * 1048576 });
      node = await client.getNode();
    } finally {
      client.close();
    }
    // The engine keelsond chose, and why (auto falls back to the thread pool where io_uring cannot be used).
    const ioEngine = `${node.ioEngine}: ${node.ioEngineNote || `chosen by --io ${io}`}${node.pool.directIo ? "; volumes' blocks O_DIRECT (GetNode pool.directIo), metadata buffered" : ""}`;
    return await fn({
      name,
      dataPath: { kind: "nbd", uri: `nbd+unix:///bench?socket=${nbdSocket}` },
      probeCache: () => openFlagsCache(d.pid, backing),
      facts: { ioEngine },
    });
  } finally {
    // keelsond exits on SIGTERM after closing its pool, and V8 writes the profile at that exit.
    await stopChild(d);
    if (PROFILE_DIR) printProfile(path.join(PROFILE_DIR, `${name}.cpuprofile`));
  }
}

/** The functions that took most of a CPU profile's samples (self time), to stderr. */
function printProfile(file) {
  if (!fs.existsSync(file)) {
    console.error(`bench: no CPU profile at ${file} (keelsond did not exit cleanly)`);
    return;
  }
  const profile = JSON.parse(fs.readFileSync(file, "utf8"));
  const hits = new Map();
  for (const node of profile.nodes) {
    const f = node.callFrame;
    const where = `${f.functionName || "(anonymous)"} ${f.url ? `${path.basename(f.url)}:${f.lineNumber + 1}` : ""}`.trim();
    hits.set(where, (hits.get(where) ?? 0) + (node.hitCount ?? 0));
  }
  const total = [...hits.values()].reduce((a, b) => a + b, 0);
  const top = [...hits.entries()].sort((a, b) => b[1] - a[1]).slice(0, 15);
  console.error(`bench: CPU profile ${file}, top functions by self time of ${total} samples:`);
  for (const [where, n] of top) console.error(`  ${((100 * n) / total).toFixed(1).padStart(5)}%  ${where}`);
}

/** Runs an NBD server that serves `backing` on a unix socket, for the duration of `fn`. */
async function withNbdPeer(name, sock, backing, cmd, args, fn) {
  const p = startChild(cmd, args);
  try {
    await waitFor(sock, p, cmd);
    return await fn({
      name,
      dataPath: { kind: "nbd", uri: `nbd+unix:///?socket=${sock}` },
      probeCache: () => openFlagsCache(p.pid, backing),
    });
  } finally {
    await stopChild(p);
  }
}

function withNbdkit(dir, backing, fn) {
  const sock = path.join(dir, "nbdkit.sock");
  // The file plugin's default cache=default: plain pread/pwrite through the page cache.
  return withNbdPeer("nbdkit-file", sock, backing, "nbdkit", ["-f", "-U", sock, "file", `file=${backing}`], fn);
}

function withQemuNbd(dir, backing, fn) {
  const sock = path.join(dir, "qemu.sock");
  const args = ["-f", "raw", "--cache=none", "--aio=native", "--shared=16", "-t", "-k", sock, backing];
  return withNbdPeer("qemu-nbd", sock, backing, "qemu-nbd", args, fn);
}

/**
 * A loop device over `backing` with direct I/O on, so that neither fio (direct=1 on the
 * device) nor the loop driver (O_DIRECT on the file) goes through the page cache.
 * losetup only warns when the kernel refuses direct I/O, so the cache column reads sysfs.
 */
async function withLoop(_dir, backing, fn) {
  const r = spawnSync("losetup", ["--find", "--show", "--direct-io=on", backing], { encoding: "utf8" });
  if (r.status !== 0) throw new Error(`losetup failed: ${r.stderr}`);
  const device = r.stdout.trim();
  try {
    const dio = () => fs.readFileSync(`/sys/block/${path.basename(device)}/loop/dio`, "utf8").trim();
    return await fn({
      name: "raw-loop",
      dataPath: { kind: "block", devicePath: device },
      probeCache: () =>
        dio() === "1"
          ? { cache: "none", cacheHow: "loop dio=1, fio direct=1" }
          : { cache: "buffered", cacheHow: `loop dio=0 (${r.stderr.trim() || "direct I/O refused"})` },
    });
  } finally {
    spawnSync("losetup", ["-d", device]);
  }
}

const RUNNERS = {
  keelson: { need: [], fn: (dir, backing, fn) => withKeelson("keelson", "auto", dir, backing, fn) },
  "keelson-direct": {
    need: [],
    fn: (dir, backing, fn) => withKeelson("keelson-direct", "auto", dir, backing, fn, ["--direct-io", "on"]),
  },
  "keelson-threadpool": { need: [], fn: (dir, backing, fn) => withKeelson("keelson-threadpool", "threadpool", dir, backing, fn) },
  "nbdkit-file": { need: ["nbdkit"], fn: withNbdkit },
  "qemu-nbd": { need: ["qemu-nbd"], fn: withQemuNbd },
  "raw-loop": { need: ["losetup"], root: true, fn: withLoop },
};

/** The table: one row per profile and target; ratios are of IOPS (keelson's over the other's). */
function report(results, targets, skipped) {
  const by = (t, p) => results.find((r) => r.target === t && r.profile === p);
  const cacheOf = (t) => targets.find((x) => x.name === t)?.cache ?? "";
  const ratio = (a, b) => (a && b && b.iops > 0 ? `${(a.iops / b.iops).toFixed(2)}x` : "");
  const header = [
    "profile",
    "target",
    "cache",
    "IOPS",
    "MiB/s",
    "p50 us",
    "p99 us",
    "p99.9 us",
    "p99.99 us",
    "keelson/peer",
    "keelson/keelson-threadpool",
  ];
  const rows = [header];
  // Like with like: a peer that bypasses the page cache is compared with keelson doing the same, when it ran.
  const keelsonFor = (peer) =>
    cacheOf(peer) === "none" && ["none", "mixed"].includes(cacheOf("keelson-direct")) ? "keelson-direct" : "keelson";
  for (const profile of profiles) {
    const k = by("keelson", profile);
    for (const t of TARGETS) {
      const r = by(t, profile);
      if (!r) continue;
      const us = (v) => v.toFixed(0);
      rows.push([
        profile,
        t,
        cacheOf(t),
        r.iops.toFixed(0),
        r.mibps.toFixed(1),
        us(r.p50Us),
        us(r.p99Us),
        us(r.p999Us),
        us(r.p9999Us),
        PEERS.includes(t) ? ratio(by(keelsonFor(t), profile), r) : "",
        t === "keelson-threadpool" ? ratio(k, r) : "",
      ]);
    }
  }
  const widths = header.map((_, i) => Math.max(...rows.map((r) => r[i].length)));
  const lines = rows.map((r) =>
    r
      .map((c, i) => (i < 3 ? c.padEnd(widths[i]) : c.padStart(widths[i])))
      .join("  ")
      .trimEnd(),
  );
  lines.push("");
  const pairs = PEERS.filter((p) => targets.some((t) => t.name === p)).map((p) => `${keelsonFor(p)} over ${p}`);
  if (pairs.length > 0) lines.push(`keelson/peer: ${pairs.join(", ")}`);
  for (const t of targets) {
    const io = t.ioEngine ? `; disk I/O ${t.ioEngine}` : "";
    lines.push(`${t.name}: cache ${t.cache} (${t.cacheHow})${io}`);
  }
  for (const [t, why] of Object.entries(skipped)) lines.push(`skipped ${t}: ${why}`);
  return lines.join("\n");
}

/** First line of `cmd --version`, or "" when it is not installed. */
function toolVersion(cmd) {
  const r = spawnSync(cmd, ["--version"], { encoding: "utf8" });
  return r.status === 0 ? r.stdout.split("\n")[0].trim() : "";
}

/** The machine and tools a run's figures belong to. */
function machineFacts() {
  return {
    host: os.hostname(),
    cpuModel: os.cpus()[0]?.model.trim() ?? "",
    cpuCount: os.cpus().length,
    memoryBytes: os.totalmem(),
    kernel: `${os.type()} ${os.release()}`,
    nodeVersion: process.version,
    fioVersion: fioKit.fioVersion(),
    nbdkitVersion: toolVersion("nbdkit"),
    qemuNbdVersion: toolVersion("qemu-nbd"),
  };
}

/** Writes the run to bench/results/ (every run, git-ignored) and bench/baselines/ (one a day per core count; the day's last run). */
function writeRun(run) {
  const day = run.meta.startedAt.slice(0, 10);
  const files = [
    path.join(ROOT, "bench", "results", `bench-${run.meta.startedAt.replace(/[:.]/g, "-")}.json`),
    path.join(ROOT, "bench", "baselines", `bench-${run.meta.cpuCount}cpu-${day}.json`),
  ];
  for (const file of files) {
    fs.mkdirSync(path.dirname(file), { recursive: true });
    fs.writeFileSync(file, `${JSON.stringify(run, null, 2)}\n`);
  }
  return files;
}

async function main() {
  fioKit = await importBuilt("@keelson/conformance");
  if (!fioKit.fioVersion()) throw new Error("fio is not installed (apt-get install fio)");
  profiles = (
    process.env.BENCH_PROFILES ??
    knownProfiles()
      .map((p) => p.name)
      .join(",")
  )
    .split(",")
    .filter(Boolean);
  for (const p of profiles) profileNamed(p); // an unknown name fails here, listing the valid ones
  for (const t of TARGETS) if (!RUNNERS[t]) throw new Error(`unknown target ${t}: use ${ALL_TARGETS.join(", ")}`);
  const dir = fs.mkdtempSync(path.join(process.env.BENCH_DIR ?? os.tmpdir(), "keelson-bench-"));
  cleanups.push(() => fs.rmSync(dir, { recursive: true, force: true }));
  workDir = path.join(dir, "fio");
  const backing = path.join(dir, "backing.img");
  fs.closeSync(fs.openSync(backing, "w"));
  fs.truncateSync(backing, POOL_MIB * 1048576);
  const startedAt = new Date().toISOString();
  const loadAvg1mAtStart = os.loadavg()[0];
  const results = [];
  const targets = [];
  const skipped = {};
  console.error(
    `bench: ${profiles.length} profiles x ${TARGETS.join(", ")}; ${RUNTIME_S}s each on a ${REGION_MIB} MiB region of ${backing}`,
  );
  for (const t of TARGETS) {
    const runner = RUNNERS[t];
    const missing = runner.need.filter((n) => !has(n));
    if (runner.root && process.getuid?.() !== 0) missing.push("root");
    if (missing.length > 0) {
      skipped[t] = `needs ${missing.join(", ")}`;
      continue;
    }
    interrupted.signal.throwIfAborted();
    targets.push(await runner.fn(dir, backing, (target) => runProfiles(target, results)));
    syncBacking(backing);
  }
  const meta = {
    startedAt,
    finishedAt: new Date().toISOString(),
    ...machineFacts(),
    // The 1-minute load average around the run: other work on the machine shows here.
    loadAvg1mAtStart,
    loadAvg1mAtEnd: os.loadavg()[0],
    runtimeS: RUNTIME_S,
    rampS: RAMP_S,
    regionMiB: REGION_MIB,
  };
  const files = writeRun({ meta, targets, skipped, results });
  console.log(report(results, targets, skipped));
  console.log(`\nJSON: ${files.map((f) => path.relative(process.cwd(), f)).join(", ")}`);
}

const finish = async (code) => {
  for (const c of children) await stopChild(c);
  for (const f of cleanups.reverse()) f();
  process.exit(code);
};
// The running fio stops (the runner kills it) and main unwinds through its cleanups; a second ^C does not wait.
process.on("SIGINT", () => {
  if (interrupted.signal.aborted) finish(130);
  else interrupted.abort();
});
main().then(
  () => finish(0),
  (e) => {
    if (interrupted.signal.aborted) {
      console.error("bench interrupted");
      return finish(130);
    }
    console.error(`bench failed: ${e.stack ?? e}`);
    return finish(1);
  },
);
