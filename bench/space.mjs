#!/usr/bin/env node
// Thin-provisioning space on this machine, against a real keelsond over NBD and gRPC: pool
// bytes used per byte written (issue 16's target: <= 2x for scattered 4 KiB writes).
//   - scattered: 2,000 random 4 KiB writes (distinct blocks) into an empty 8 GiB volume;
//   - after a snapshot: a 1 GiB volume written through, snapshotted, then 2,000 random 4 KiB
//     writes into the head (first writes into extents the snapshot holds);
//   - sequential: 64 MiB in 1 MiB writes into an empty volume (the control: 1x is the floor).
// Used bytes are the pool's allocated bytes before and after (GetNode), and the head's and the
// snapshot's own bytes (GetVolume / GetSnapshot allocatedBytes: space per layer).
//
//   npm run bench:space                          (builds first)
//   BENCH_SPACE_WRITES=500 npm run bench:space   fewer scattered writes
import { spawnSync } from "node:child_process";
import os from "node:os";
import { startKeelsond } from "./keelsond.mjs";
import { saveResults } from "./results.mjs";

const WRITES = Number(process.env.BENCH_SPACE_WRITES ?? 2000);
const BLOCK = 4096;
const MIB = 1024 * 1024;
const GIB = 1024 * MIB;
/** Issue 16's target for scattered 4 KiB writes. */
const TARGET_RATIO = 2;

/** Runs fio's nbd engine against one export; throws with fio's stderr when it fails. */
function fio(uri, args) {
  const r = spawnSync("fio", ["--name=space", "--ioengine=nbd", `--uri=${uri}`, "--output-format=json", ...args], {
    encoding: "utf8",
    maxBuffer: 64 * MIB,
  });
  if (r.status !== 0) throw new Error(`fio failed: ${r.stderr}`);
  const job = JSON.parse(r.stdout.slice(r.stdout.indexOf("{"))).jobs[0];
  return job.write.io_bytes;
}

/** `count` random 4 KiB writes over the first `spanBytes` of an export; fio's random map keeps the blocks distinct. */
function scatteredWrites(uri, spanBytes, count) {
  return fio(uri, [
    "--rw=randwrite",
    `--bs=${BLOCK}`,
    `--size=${spanBytes}`,
    `--number_ios=${count}`,
    "--iodepth=16",
    "--randseed=16",
  ]);
}

function sequentialWrites(uri, bytes) {
  return fio(uri, ["--rw=write", "--bs=1m", `--size=${bytes}`, "--iodepth=8"]);
}

async function main() {
  if (spawnSync("sh", ["-c", "command -v fio"]).status !== 0) throw new Error("fio is not installed (apt-get install fio)");
  const k = await startKeelsond({ poolSize: "8G", prefix: "keelson-bench-space-" });
  try {
    const { client, uri } = k;
    const poolUsed = async () => (await client.getNode()).pool.allocatedBytes;
    const node = await client.getNode();
    const rows = [];
    const row = (name, written, poolDelta, layers) => {
      rows.push({ case: name, writtenBytes: written, poolBytesUsed: poolDelta, ratio: poolDelta / written, ...layers });
    };

    // Scattered 4 KiB writes into an empty volume.
    await client.createVolume({ name: "scattered", sizeBytes: 8 * GIB });
    let before = await poolUsed();
    let written = scatteredWrites(uri("scattered"), 8 * GIB, WRITES);
    row("scattered 4k", written, (await poolUsed()) - before, {
      headBytes: (await client.getVolume({ name: "scattered" })).allocatedBytes,
    });
    await client.deleteVolume({ name: "scattered" });

    // The same after a snapshot of a volume written through.
    await client.createVolume({ name: "snapped", sizeBytes: GIB });
    sequentialWrites(uri("snapped"), GIB);
    await client.createSnapshot({ volume: "snapped", name: "full" });
    before = await poolUsed();
    written = scatteredWrites(uri("snapped"), GIB, WRITES);
    row("scattered 4k after a snapshot", written, (await poolUsed()) - before, {
      headBytes: (await client.getVolume({ name: "snapped" })).allocatedBytes,
      snapshotBytes: (await client.getSnapshot({ volume: "snapped", name: "full" })).allocatedBytes,
    });
    await client.deleteSnapshot({ volume: "snapped", name: "full" });
    await client.deleteVolume({ name: "snapped" });

    // Control: sequential 1 MiB writes.
    await client.createVolume({ name: "sequential", sizeBytes: GIB });
    before = await poolUsed();
    written = sequentialWrites(uri("sequential"), 64 * MIB);
    row("sequential 1m (control)", written, (await poolUsed()) - before, {
      headBytes: (await client.getVolume({ name: "sequential" })).allocatedBytes,
    });
    await client.deleteVolume({ name: "sequential" });

    console.log(`pool: ${node.pool.totalBytes} bytes, extent ${node.pool.extentSizeBytes} bytes`);
    console.log("case                            written      pool used   used/written  target");
    for (const r of rows) {
      const target = r.case.startsWith("scattered") ? `<= ${TARGET_RATIO}x ${r.ratio <= TARGET_RATIO ? "met" : "NOT met"}` : "";
      console.log(
        `${r.case.padEnd(30)}  ${String(r.writtenBytes).padStart(10)}  ${String(r.poolBytesUsed).padStart(12)}  ${r.ratio.toFixed(2).padStart(11)}x  ${target}`,
      );
    }
    const results = {
      machine: `${os.cpus().length} cpus, ${os.cpus()[0]?.model ?? "?"}`,
      writes: WRITES,
      extentSizeBytes: node.pool.extentSizeBytes,
      rows,
    };
    saveResults("space", results);
  } finally {
    await k.stop();
  }
}

main().catch((error) => {
  console.error(error);
  process.exit(1);
});
