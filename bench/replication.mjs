#!/usr/bin/env node
// Replication figures on this machine, on a local 3-node cluster (as root: one
// network namespace and loop-device disk per node; otherwise 127.0.0.x and files):
//   - 4k randwrite qd32 IOPS through the attached node's NBD export with 1, 2
//     and 3 replicas, each relative to 1 (rounds interleaved, median of 3), and
//     the CPU each node process spent per write (user + system, from /proc,
//     over the same runs: microseconds per acknowledged write);
//   - rebuild rate of a returning replica (MiB/s), against the sequential
//     write rate of a file in the same directory the node disks live in.
//
//   npm run bench:replication              (build first: npm run build)
//   BENCH_RUNTIME_S=5 BENCH_REBUILD_MIB=512 npm run bench:replication
//   BENCH_REBUILD_RATE=32M npm run bench:replication   (nodes run with --rebuild-rate 32M)
import { spawnSync } from "node:child_process";
import fs from "node:fs";
import os from "node:os";
import path from "node:path";
import { fileURLToPath } from "node:url";
import { createClient } from "@keelson/sdk";
import { importBuilt } from "./workspace.mjs";

const ROOT = path.dirname(path.dirname(fileURLToPath(import.meta.url)));
const RUNTIME_S = Number(process.env.BENCH_RUNTIME_S ?? 8);
const REBUILD_MIB = Number(process.env.BENCH_REBUILD_MIB ?? 512);
const REBUILD_RATE = process.env.BENCH_REBUILD_RATE ?? "";
const VOLUME_MIB = 256;
const ROUNDS = 3;
const MIB = 1024 * 1024;
const sleep = (ms) => new Promise((r) => setTimeout(r, ms));
const median = (xs) => [...xs].sort((a, b) => a - b)[Math.floor(xs.length / 2)];
/** Clock ticks per second of /proc's CPU times (USER_HZ: 100 on Linux). */
const TICKS_PER_S = Number(spawnSync("getconf", ["CLK_TCK"], { encoding: "utf8" }).stdout.trim() || 100);

/** CPU seconds (user + system) process `pid` has used so far, from /proc/PID/stat; 0 once it is gone. */
function cpuSeconds(pid) {
  try {
    const stat = fs.readFileSync(`/proc/${pid}/stat`, "utf8");
    // Fields after the command name (which may hold spaces) start after its closing parenthesis.
    const fields = stat.slice(stat.lastIndexOf(")") + 2).split(" ");
    return (Number(fields[11]) + Number(fields[12])) / TICKS_PER_S;
  } catch {
    return 0;
  }
}

/**
 * The disk's own sequential write rate, measured as the node disks are written: buffered writes and
 * one fsync at the end, on a plain file. The conformance runner's jobs are O_DIRECT on a DataPath,
 * which would measure something else (and fails on a tmpfs), so this one job runs fio directly.
 */
function diskSequentialWrite(file, sizeMiB) {
  const args = ["--name=b", "--output-format=json", "--ioengine=psync", `--filename=${file}`, "--rw=write", "--bs=1M"];
  const r = spawnSync("fio", [...args, `--size=${sizeMiB}M`, "--end_fsync=1"], { encoding: "utf8", maxBuffer: 64 * MIB });
  if (r.status !== 0) throw new Error(`fio failed: ${r.stderr}`);
  return JSON.parse(r.stdout.slice(r.stdout.indexOf("{"))).jobs[0];
}

async function waitHealthy(client, name, timeoutMs = 300_000) {
  const deadline = Date.now() + timeoutMs;
  while (Date.now() < deadline) {
    const a = await client.getAttachment({ name });
    if (a.state === "healthy") return a;
    await sleep(100);
  }
  throw new Error(`${name} not healthy after ${timeoutMs} ms`);
}

async function main() {
  const { LocalCluster } = await importBuilt("@keelson/engine");
  const { runFio, benchProfile, profileJob } = await importBuilt("@keelson/conformance");
  const dir = path.join(os.tmpdir(), `keelson-bench-repl-${process.pid}`);
  const fill = (uri, sizeMiB) =>
    runFio({
      dataPath: { kind: "nbd", uri },
      job: { name: "fill", rw: "write", blockSizeBytes: MIB, iodepth: 8, sizeBytes: sizeMiB * MIB },
      workDir: path.join(dir, "fio"),
    });
  const cluster = await LocalCluster.start({
    nodes: 3,
    dir,
    diskSizeBytes: (REBUILD_MIB + 4 * VOLUME_MIB) * MIB,
    leaseTtlS: 3,
    ...(REBUILD_RATE ? { keelsondArgs: ["--rebuild-rate", REBUILD_RATE] } : {}),
  });
  const results = {
    machine: `${os.cpus().length} cpus, ${os.cpus()[0]?.model ?? "?"}`,
    isolation: cluster.state.isolation,
    runtimeS: RUNTIME_S,
  };
  try {
    // Long deadlines: on a small disk, metadata syncs wait behind the writeback of the fills.
    const c = createClient({ address: cluster.nodes[0].grpcAddress, defaultTimeoutMs: 120_000 });
    const address = cluster.nodes[0].nbdAddress;
    // IOPS with 1, 2 and 3 replicas, all attached on node1 (which holds one replica of each).
    const iops = { 1: [], 2: [], 3: [] };
    /** Per replica count: CPU seconds each node used during its runs, and the writes acknowledged. */
    const cpu = { 1: { s: [0, 0, 0], writes: 0 }, 2: { s: [0, 0, 0], writes: 0 }, 3: { s: [0, 0, 0], writes: 0 } };
    for (const n of [1, 2, 3]) {
      await c.createVolume({ name: `r${n}`, sizeBytes: VOLUME_MIB * MIB, replicas: n });
      // One replica is a plain local volume (served by its node's own export, no frontend).
      if (n > 1) await c.attachVolume({ name: `r${n}` });
      // Fill first so every round overwrites allocated blocks (allocation is not what is measured).
      await fill(`nbd://${address}/r${n}`, VOLUME_MIB);
    }
    for (let round = 0; round < ROUNDS; round++) {
      for (const n of [1, 2, 3]) {
        const job = profileJob(benchProfile("randwrite-4k-qd32"), { runtimeS: RUNTIME_S, sizeBytes: VOLUME_MIB * MIB });
        const before = cluster.nodes.map((node) => cpuSeconds(node.pid));
        const r = await runFio({ dataPath: { kind: "nbd", uri: `nbd://${address}/r${n}` }, job, workDir: path.join(dir, "fio") });
        cluster.nodes.forEach((node, i) => {
          cpu[n].s[i] += cpuSeconds(node.pid) - (before[i] ?? 0);
        });
        cpu[n].writes += r.write.ioBytes / 4096;
        iops[n].push(Math.round(r.write.iops));
      }
    }
    const base = median(iops[1]);
    results.randwrite4kQd32 = Object.fromEntries(
      [1, 2, 3].map((n) => [
        `${n} replica${n > 1 ? "s" : ""}`,
        {
          iops: median(iops[n]),
          relative: +(median(iops[n]) / base).toFixed(2),
          runs: iops[n],
          // node1 is the frontend (it holds one replica); the others hold one replica each where n says so.
          cpuUsPerWrite: Object.fromEntries(
            cluster.nodes.map((node, i) => [node.nodeId, +((cpu[n].s[i] * 1e6) / cpu[n].writes).toFixed(1)]),
          ),
        },
      ]),
    );

    // Rebuild rate: node3 goes away, REBUILD_MIB is written while it is out, it returns.
    await c.createVolume({ name: "rb", sizeBytes: REBUILD_MIB * MIB, replicas: 3 });
    await c.attachVolume({ name: "rb" });
    await cluster.kill9(2);
    const uri = `nbd://${address}/rb`;
    await fill(uri, REBUILD_MIB);
    await cluster.startNode(2);
    const healed = await waitHealthy(c, "rb");
    const r3 = healed.replicas.find((r) => r.nodeId === "node3")?.lastRebuild;
    const rebuildMiBs = r3 ? r3.bytes / MIB / (r3.durationMs / 1000) : 0;
    // The disk's sequential write rate: a file beside the node disks, written and synced.
    const scratch = path.join(dir, "seqwrite.img");
    const seq = diskSequentialWrite(scratch, REBUILD_MIB);
    fs.rmSync(scratch, { force: true });
    const seqMiBs = seq.write.bw_bytes / MIB;
    results.rebuild = {
      copiedMiB: r3 ? +(r3.bytes / MIB).toFixed(1) : 0,
      ms: r3?.durationMs ?? 0,
      full: r3?.full ?? null,
      limit: REBUILD_RATE || "none",
      MiBps: +rebuildMiBs.toFixed(1),
      diskSequentialWriteMiBps: +seqMiBs.toFixed(1),
      relativeToDisk: +(rebuildMiBs / seqMiBs).toFixed(2),
    };
    c.close();
  } finally {
    await cluster.stop();
  }
  const out = path.join(ROOT, "bench", "results", `replication-${new Date().toISOString().replace(/[:.]/g, "-")}.json`);
  fs.mkdirSync(path.dirname(out), { recursive: true });
  fs.writeFileSync(out, `${JSON.stringify(results, null, 2)}\n`);
  console.log(JSON.stringify(results, null, 2));
  console.log(`written to ${path.relative(ROOT, out)}`);
}

main().catch((error) => {
  console.error(error);
  process.exit(1);
});
