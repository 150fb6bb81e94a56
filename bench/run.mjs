#!/usr/bin/env node
// Runs the fio profiles in bench/jobs against keelson and, in the same run and
// on the same backing file, against nbdkit-file, qemu-nbd (cache=none,
// aio=native) and the raw loop device; prints a table with keelson/peer
// ratios and writes the same as JSON under bench/results/.
//
//   npm run bench                      all profiles, all peers available here
//   BENCH_RUNTIME_S=5 npm run bench    shorter runs
//   BENCH_PROFILES=randread-4k-qd32 BENCH_TARGETS=keelson,nbdkit-file npm run bench
import { spawn, spawnSync } from "node:child_process";
import fs from "node:fs";
import os from "node:os";
import path from "node:path";
import { fileURLToPath } from "node:url";

const ROOT = path.dirname(path.dirname(fileURLToPath(import.meta.url)));
const JOBS = path.join(ROOT, "bench", "jobs");
const RUNTIME_S = Number(process.env.BENCH_RUNTIME_S ?? 10);
const REGION_MIB = Number(process.env.BENCH_REGION_MIB ?? 512);
const POOL_MIB = REGION_MIB + 256;
const PROFILES = (
  process.env.BENCH_PROFILES ??
  fs
    .readdirSync(JOBS)
    .filter((f) => f.endsWith(".fio"))
    .map((f) => f.slice(0, -4))
    .sort()
    .join(",")
)
  .split(",")
  .filter(Boolean);
const ALL_TARGETS = ["keelson", "nbdkit-file", "qemu-nbd", "raw-loop"];
const TARGETS = (process.env.BENCH_TARGETS ?? ALL_TARGETS.join(",")).split(",").filter(Boolean);

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

function fio(jobText, name) {
  const jobFile = path.join(os.tmpdir(), `keelson-bench-${process.pid}-${name}.fio`);
  fs.writeFileSync(jobFile, jobText);
  const r = spawnSync("fio", ["--output-format=json", jobFile], { encoding: "utf8", maxBuffer: 64 << 20 });
  fs.rmSync(jobFile, { force: true });
  if (r.status !== 0) throw new Error(`fio ${name} failed: ${r.stderr}${r.stdout}`);
  const json = JSON.parse(r.stdout.slice(r.stdout.indexOf("{")));
  const job = json.jobs[0];
  const side = job.write.io_bytes > job.read.io_bytes ? job.write : job.read;
  const pct = side.clat_ns.percentile ?? {};
  return {
    iops: side.iops,
    mibps: side.bw_bytes / 1048576,
    p50Us: (pct["50.000000"] ?? 0) / 1000,
    p99Us: (pct["99.000000"] ?? 0) / 1000,
    p999Us: (pct["99.900000"] ?? 0) / 1000,
  };
}

function globalSection(target) {
  const common = [
    `size=${REGION_MIB}m`,
    "time_based=1",
    `runtime=${RUNTIME_S}`,
    "ramp_time=1",
    "group_reporting=1",
    "norandommap=1",
    "randrepeat=0",
  ];
  if (target.kind === "nbd") return ["[global]", "ioengine=nbd", `uri=${target.uri}`, ...common].join("\n");
  return ["[global]", "ioengine=libaio", "direct=1", `filename=${target.device}`, ...common].join("\n");
}

function prefill(target) {
  // Reads must hit real data on every target (a thin volume would answer unwritten blocks without I/O).
  const g = globalSection(target)
    .replace(/time_based=1\n/, "")
    .replace(/runtime=\d+\n/, "")
    .replace(/ramp_time=1\n/, "");
  fio(`${g}\n[prefill]\nrw=write\nbs=1m\niodepth=8\n`, "prefill");
}

function runProfiles(target, results) {
  prefill(target);
  for (const profile of PROFILES) {
    const job = fs.readFileSync(path.join(JOBS, `${profile}.fio`), "utf8");
    const r = fio(`${globalSection(target)}\n${job}`, profile);
    results.push({ target: target.name, profile, ...r });
    console.error(
      `  ${target.name.padEnd(12)} ${profile.padEnd(18)} ${r.iops.toFixed(0).padStart(8)} IOPS ${r.mibps.toFixed(1).padStart(8)} MiB/s p99 ${r.p99Us.toFixed(0)} us`,
    );
  }
}

async function withKeelson(dir, backing, fn) {
  const ready = path.join(dir, "keelson.ready");
  const d = startChild(process.execPath, [
    path.join(ROOT, "packages/engine/dist/cli/keelsond.js"),
    "--pool",
    backing,
    "--force-format",
    "--grpc-listen",
    "127.0.0.1:0",
    "--nbd-listen",
    "",
    "--nbd-socket",
    path.join(dir, "keelson.sock"),
    "--ready-file",
    ready,
  ]);
  try {
    await waitFor(ready, d, "keelsond");
    const { grpcAddress, nbdSocket } = JSON.parse(fs.readFileSync(ready, "utf8"));
    const { createClient } = await import(path.join(ROOT, "packages/sdk/dist/index.js"));
    const client = createClient({ address: grpcAddress });
    await client.createVolume({ name: "bench", sizeBytes: REGION_MIB * 1048576 });
    client.close();
    await fn({ name: "keelson", kind: "nbd", uri: `nbd+unix:///bench?socket=${nbdSocket}` });
  } finally {
    await stopChild(d);
  }
}

/** Runs an NBD server that serves `backing` on a unix socket, for the duration of `fn`. */
async function withNbdPeer(name, sock, cmd, args, fn) {
  const p = startChild(cmd, args);
  try {
    await waitFor(sock, p, cmd);
    await fn({ name, kind: "nbd", uri: `nbd+unix:///?socket=${sock}` });
  } finally {
    await stopChild(p);
  }
}

function withNbdkit(dir, backing, fn) {
  const sock = path.join(dir, "nbdkit.sock");
  return withNbdPeer("nbdkit-file", sock, "nbdkit", ["-f", "-U", sock, "file", `file=${backing}`], fn);
}

function withQemuNbd(dir, backing, fn) {
  const sock = path.join(dir, "qemu.sock");
  const args = ["-f", "raw", "--cache=none", "--aio=native", "--shared=16", "-t", "-k", sock, backing];
  return withNbdPeer("qemu-nbd", sock, "qemu-nbd", args, fn);
}

async function withLoop(_dir, backing, fn) {
  const r = spawnSync("losetup", ["--find", "--show", backing], { encoding: "utf8" });
  if (r.status !== 0) throw new Error(`losetup failed: ${r.stderr}`);
  const device = r.stdout.trim();
  try {
    await fn({ name: "raw-loop", kind: "block", device });
  } finally {
    spawnSync("losetup", ["-d", device]);
  }
}

const RUNNERS = {
  keelson: { need: [], fn: withKeelson },
  "nbdkit-file": { need: ["nbdkit"], fn: withNbdkit },
  "qemu-nbd": { need: ["qemu-nbd"], fn: withQemuNbd },
  "raw-loop": { need: ["losetup"], root: true, fn: withLoop },
};

function report(results, skipped) {
  const by = (t, p) => results.find((r) => r.target === t && r.profile === p);
  const peers = TARGETS.filter((t) => t !== "keelson" && !skipped[t]);
  const lines = [];
  const header = ["profile", "target", "IOPS", "MiB/s", "p50 us", "p99 us", "p99.9 us", "keelson/peer"];
  const rows = [header];
  for (const profile of PROFILES) {
    const k = by("keelson", profile);
    for (const t of ["keelson", ...peers]) {
      const r = by(t, profile);
      if (!r) continue;
      const ratio = t === "keelson" || !k ? "" : `${(k.iops / r.iops).toFixed(2)}x`;
      rows.push([
        profile,
        t,
        r.iops.toFixed(0),
        r.mibps.toFixed(1),
        r.p50Us.toFixed(0),
        r.p99Us.toFixed(0),
        r.p999Us.toFixed(0),
        ratio,
      ]);
    }
  }
  const widths = header.map((_, i) => Math.max(...rows.map((r) => r[i].length)));
  for (const r of rows) lines.push(r.map((c, i) => (i < 2 ? c.padEnd(widths[i]) : c.padStart(widths[i]))).join("  "));
  for (const [t, why] of Object.entries(skipped)) lines.push(`skipped ${t}: ${why}`);
  return lines.join("\n");
}

async function main() {
  if (!has("fio")) throw new Error("fio is not installed (apt-get install fio)");
  const dir = fs.mkdtempSync(path.join(process.env.BENCH_DIR ?? os.tmpdir(), "keelson-bench-"));
  cleanups.push(() => fs.rmSync(dir, { recursive: true, force: true }));
  const backing = path.join(dir, "backing.img");
  fs.closeSync(fs.openSync(backing, "w"));
  fs.truncateSync(backing, POOL_MIB * 1048576);
  const results = [];
  const skipped = {};
  console.error(
    `bench: ${PROFILES.length} profiles x ${TARGETS.join(", ")}; ${RUNTIME_S}s each on a ${REGION_MIB} MiB region of ${backing}`,
  );
  for (const t of TARGETS) {
    const runner = RUNNERS[t];
    if (!runner) throw new Error(`unknown target ${t}: use ${ALL_TARGETS.join(", ")}`);
    const missing = runner.need.filter((n) => !has(n));
    if (runner.root && process.getuid?.() !== 0) missing.push("root");
    if (missing.length > 0) {
      skipped[t] = `needs ${missing.join(", ")}`;
      continue;
    }
    await runner.fn(dir, backing, (target) => runProfiles(target, results));
  }
  const meta = {
    date: new Date().toISOString(),
    host: os.hostname(),
    cpus: os.cpus().length,
    runtimeS: RUNTIME_S,
    regionMiB: REGION_MIB,
  };
  const outDir = path.join(ROOT, "bench", "results");
  fs.mkdirSync(outDir, { recursive: true });
  const out = path.join(outDir, `bench-${meta.date.replace(/[:.]/g, "-")}.json`);
  fs.writeFileSync(out, JSON.stringify({ meta, skipped, results }, null, 2));
  console.log(report(results, skipped));
  console.log(`\nJSON: ${path.relative(process.cwd(), out)}`);
}

const finish = async (code) => {
  for (const c of children) await stopChild(c);
  for (const f of cleanups.reverse()) f();
  process.exit(code);
};
process.on("SIGINT", () => finish(130));
main().then(
  () => finish(0),
  (e) => {
    console.error(`bench failed: ${e.stack ?? e}`);
    finish(1);
  },
);
