#!/usr/bin/env node
// Snapshot figures on this machine, against a real keelsond over NBD and gRPC:
//   - snapshot create time (median of 20) on a full 64 MiB and a full 4 GiB volume;
//   - 4k randread qd32 IOPS with a chain of 0, 8 and 32 snapshots (relative to 0, median of 3);
//   - time to delete a snapshot holding 1 GiB, when the head above it is empty
//     (extents move) and when the head has touched every extent (blocks are copied).
//
//   npm run bench:snapshots                 (build first: npm run build)
//   BENCH_RUNTIME_S=5 npm run bench:snapshots
import { spawnSync } from "node:child_process";
import os from "node:os";
import { startKeelsond } from "./keelsond.mjs";
import { saveResults } from "./results.mjs";

const RUNTIME_S = Number(process.env.BENCH_RUNTIME_S ?? 8);
const MIB = 1024 * 1024;
const GIB = 1024 * MIB;

function fio(uri, args) {
  const r = spawnSync("fio", ["--name=b", "--ioengine=nbd", `--uri=${uri}`, "--output-format=json", ...args], {
    encoding: "utf8",
    maxBuffer: 64 * MIB,
  });
  if (r.status !== 0) throw new Error(`fio failed: ${r.stderr}`);
  return JSON.parse(r.stdout.slice(r.stdout.indexOf("{"))).jobs[0];
}

const median = (xs) => [...xs].sort((a, b) => a - b)[Math.floor(xs.length / 2)];
const ms = (start) => Number(process.hrtime.bigint() - start) / 1e6;

async function main() {
  const k = await startKeelsond({ poolSize: "7G", prefix: "keelson-bench-snap-" });
  try {
    const { client, uri } = k;
    const results = { machine: `${os.cpus().length} cpus, ${os.cpus()[0]?.model ?? "?"}`, runtimeS: RUNTIME_S };

    // Snapshot create time.
    results.createMedianMs = {};
    for (const [name, size] of [
      ["small", 64 * MIB],
      ["large", 4 * GIB],
    ]) {
      await client.createVolume({ name, sizeBytes: size });
      fio(uri(name), ["--rw=write", "--bs=1M", "--iodepth=8", `--size=${size}`, "--end_fsync=1"]);
      const times = [];
      for (let i = 0; i < 20; i++) {
        const t = process.hrtime.bigint();
        await client.createSnapshot({ volume: name, name: `s${i}` });
        times.push(ms(t));
      }
      results.createMedianMs[name === "small" ? "64MiB" : "4GiB"] = Number(median(times).toFixed(3));
      for (let i = 0; i < 20; i++) await client.deleteSnapshot({ volume: name, name: `s${i}` });
      await client.deleteVolume({ name });
    }

    // Read IOPS against chain length: three volumes filled alike, with 0, 8 and 32 snapshots, 4 MiB
    // of new writes (whole extents) before each snapshot to spread data over the layers. Measured
    // round-robin, three rounds, median per volume: one 2-core machine runs fio and keelsond both.
    const chains = [0, 8, 32];
    for (const n of chains) {
      const name = `chain${n}`;
      await client.createVolume({ name, sizeBytes: 256 * MIB });
      fio(uri(name), ["--rw=write", "--bs=1M", "--iodepth=8", "--size=256M", "--end_fsync=1"]);
      for (let i = 0; i < n; i++) {
        fio(uri(name), ["--rw=randwrite", "--bs=1M", "--size=256M", "--io_size=4M", `--randseed=${i + 1}`, "--end_fsync=1"]);
        await client.createSnapshot({ volume: name, name: `c${i}` });
      }
    }
    const readIops = (name) =>
      fio(uri(name), ["--rw=randread", "--bs=4k", "--iodepth=32", "--size=256M", "--time_based", `--runtime=${RUNTIME_S}`]).read
        .iops;
    readIops("chain0"); // warm-up
    const samples = Object.fromEntries(chains.map((n) => [n, []]));
    for (let round = 0; round < 3; round++) for (const n of chains) samples[n].push(readIops(`chain${n}`));
    results.randreadIops = Object.fromEntries(chains.map((n) => [n, Math.round(median(samples[n]))]));
    results.randreadRelative = Object.fromEntries(
      chains.map((n) => [n, Number((results.randreadIops[n] / results.randreadIops[0]).toFixed(3))]),
    );
    for (const n of chains) {
      await client.deleteVolume({ name: `chain${n}` });
      for (const s of await client.listSnapshots({ volume: `chain${n}` })) {
        await client.deleteSnapshot({ volume: `chain${n}`, name: s.name });
      }
    }

    // Delete a snapshot holding 1 GiB.
    results.deleteSnapshot1GiBMs = {};
    for (const touched of [false, true]) {
      const name = touched ? "fold-copy" : "fold-move";
      await client.createVolume({ name, sizeBytes: 2 * GIB });
      fio(uri(name), ["--rw=write", "--bs=1M", "--iodepth=8", "--size=1G", "--end_fsync=1"]);
      await client.createSnapshot({ volume: name, name: "full" });
      // One 4 KiB write per 1 MiB extent: the head then has an entry everywhere, so the fold must copy.
      if (touched) {
        // rw=write:1020k: 4 KiB written, then 1020 KiB skipped, so exactly one block per extent.
        const job = fio(uri(name), ["--rw=write:1020k", "--bs=4k", "--size=1G", "--end_fsync=1"]);
        const head = await client.getVolume({ name });
        results.deleteSnapshot1GiBHead = { writtenBytes: job.write.io_bytes, allocatedBytes: head.allocatedBytes };
      }
      const t = process.hrtime.bigint();
      const { freedBytes } = await client.deleteSnapshot({ volume: name, name: "full" });
      results.deleteSnapshot1GiBMs[touched ? "headTouchedEveryExtent" : "headEmpty"] = {
        ms: Math.round(ms(t)),
        freedBytes,
      };
      await client.deleteVolume({ name });
    }
    console.log(JSON.stringify(results, null, 2));
    saveResults("snapshots", results);
  } finally {
    await k.stop();
  }
}

main().catch((error) => {
  console.error(error);
  process.exit(1);
});
