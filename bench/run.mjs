#!/usr/bin/env node
// Runs the bench profiles (BENCH_PROFILES of @keelson/conformance) against
// keelson and, in the same run and on the same backing file, against
// nbdkit-file, qemu-nbd (cache=none, aio=native) and the raw loop device;
// prints a table with keelson/peer ratios and writes the same as JSON under
// bench/results/.
//
//   npm run bench                      all profiles, all peers available here
//   BENCH_RUNTIME_S=5 npm run bench    shorter runs
//   BENCH_PROFILES=randread-4k-qd32 BENCH_TARGETS=keelson,nbdkit-file npm run bench
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
const ALL_TARGETS = ["keelson", "nbdkit-file", "qemu-nbd", "raw-loop"];
const TARGETS = (process.env.BENCH_TARGETS ?? ALL_TARGETS.join(",")).split(",").filter(Boolean);
/** Aborted on SIGINT: the running fio is stopped and everything started is cleaned up. */
const interrupted = new AbortController();
/** The conformance package's fio runner and profiles (loaded in main, once the build is checked). */
let fioKit;
/** Profile names to run, in BENCH_PROFILES order unless BENCH_PROFILES names them. */
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
async function fio(target, job) {
  const r = await fioKit.runFio({ dataPath: target.dataPath, job, workDir, signal: interrupted.signal });
  // Percentiles of the direction that moved more data (the only one, but for a mix).
  const side = r.write.ioBytes > r.read.ioBytes ? r.write : r.read;
  const pct = (p) => side.percentiles.find((x) => x.percentile === p)?.latencyUs ?? 0;
  return {
    iops: r.read.iops + r.write.iops,
    mibps: (r.read.bytesPerSec + r.write.bytesPerSec) / MIB,
    p50Us: pct(50),
    p99Us: pct(99),
    p999Us: pct(99.9),
  };
}

async function prefill(target) {
  // Reads must hit real data on every target (a thin volume would answer unwritten blocks without I/O).
  await fio(target, { name: "prefill", rw: "write", blockSizeBytes: MIB, iodepth: 8, sizeBytes: REGION_MIB * MIB });
}

async function runProfiles(target, results) {
  await prefill(target);
  for (const profile of profiles) {
    const job = fioKit.profileJob(fioKit.benchProfile(profile), { sizeBytes: REGION_MIB * MIB, runtimeS: RUNTIME_S, rampS: 1 });
    const r = await fio(target, job);
    results.push({ target: target.name, profile, ...r });
    console.error(
      `  ${target.name.padEnd(12)} ${profile.padEnd(18)} ${r.iops.toFixed(0).padStart(8)} IOPS ${r.mibps.toFixed(1).padStart(8)} MiB/s p99 ${r.p99Us.toFixed(0)} us`,
    );
  }
}

async function withKeelson(dir, backing, fn) {
  const ready = path.join(dir, "keelson.ready");
  const d = startChild(process.execPath, [
    packageBin("@keelson/engine", "keelsond"),
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
    const { createClient } = await importBuilt("@keelson/sdk");
    const client = createClient({ address: grpcAddress });
    await client.createVolume({ name: "bench", sizeBytes: REGION_MIB * 1048576 });
    client.close();
    await fn({ name: "keelson", dataPath: { kind: "nbd", uri: `nbd+unix:///bench?socket=${nbdSocket}` } });
  } finally {
    await stopChild(d);
  }
}

/** Runs an NBD server that serves `backing` on a unix socket, for the duration of `fn`. */
async function withNbdPeer(name, sock, cmd, args, fn) {
  const p = startChild(cmd, args);
  try {
    await waitFor(sock, p, cmd);
    await fn({ name, dataPath: { kind: "nbd", uri: `nbd+unix:///?socket=${sock}` } });
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
    await fn({ name: "raw-loop", dataPath: { kind: "block", devicePath: device } });
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
  for (const profile of profiles) {
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
  fioKit = await importBuilt("@keelson/conformance");
  if (!fioKit.fioVersion()) throw new Error("fio is not installed (apt-get install fio)");
  profiles = (process.env.BENCH_PROFILES ?? fioKit.BENCH_PROFILES.map((p) => p.name).join(",")).split(",").filter(Boolean);
  for (const p of profiles) fioKit.benchProfile(p); // an unknown name fails here, listing the valid ones
  const dir = fs.mkdtempSync(path.join(process.env.BENCH_DIR ?? os.tmpdir(), "keelson-bench-"));
  cleanups.push(() => fs.rmSync(dir, { recursive: true, force: true }));
  workDir = path.join(dir, "fio");
  const backing = path.join(dir, "backing.img");
  fs.closeSync(fs.openSync(backing, "w"));
  fs.truncateSync(backing, POOL_MIB * 1048576);
  const results = [];
  const skipped = {};
  console.error(
    `bench: ${profiles.length} profiles x ${TARGETS.join(", ")}; ${RUNTIME_S}s each on a ${REGION_MIB} MiB region of ${backing}`,
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
    interrupted.signal.throwIfAborted();
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
