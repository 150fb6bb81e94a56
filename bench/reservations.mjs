#!/usr/bin/env node
// Reservations held end to end (issue 16), against a real keelsond over NBD and gRPC, one run,
// side by side. The engine calibrates its disk at start (O_DIRECT, with syncs); every volume is
// prefilled. A victim reads 4 KiB at random, queue depth 8, while FLOOD_VOLUMES other volumes of
// the same pool are flooded by FLOOD_JOBS fio jobs at queue depth 64 each (4 KiB random reads):
//   - victim alone (what it does with the engine to itself);
//   - victim unreserved beside the flood (the control);
//   - victim reserving each of RESERVATIONS (IOPS) beside the same flood; a reservation the disk's
//     capability does not admit is reported as refused, and the most it admits (to 1,000) runs instead.
// Each row: victim IOPS and p99 (µs), and the flood's IOPS. The target: a reserved victim gets at
// least its reservation, and clearly more than the unreserved control.
//
//   npm run bench:reservations                        (builds first)
//   BENCH_RUNTIME_S=4 BENCH_RESERVATIONS=3000,20000 npm run bench:reservations
import { spawn } from "node:child_process";
import os from "node:os";
import { startKeelsond } from "./keelsond.mjs";
import { saveResults } from "./results.mjs";

const RUNTIME_S = Number(process.env.BENCH_RUNTIME_S ?? 8);
const RESERVATIONS = (process.env.BENCH_RESERVATIONS ?? "3000,20000").split(",").map(Number);
const FLOOD_VOLUMES = Number(process.env.BENCH_FLOOD_VOLUMES ?? 3);
const FLOOD_JOBS = 6;
const FLOOD_DEPTH = 64;
const VICTIM_DEPTH = 8;
const VOLUME_BYTES = 256 * 1024 * 1024;
/** The flood runs this long before the victim starts, and a second past its end. */
const LEAD_S = 1;
/** The victim's first second is not measured (fio's ramp): the front takes a moment to shorten its turns. */
const RAMP_S = 1;
const sleep = (ms) => new Promise((r) => setTimeout(r, ms));

/** Runs fio's nbd engine; resolves with its JSON's jobs (group reporting: one per process). */
function fio(uri, args) {
  return new Promise((resolve, reject) => {
    const child = spawn("fio", ["--ioengine=nbd", `--uri=${uri}`, "--output-format=json", "--group_reporting", ...args], {
      stdio: ["ignore", "pipe", "pipe"],
    });
    let out = "";
    let err = "";
    child.stdout.on("data", (d) => {
      out += d;
    });
    child.stderr.on("data", (d) => {
      err += d;
    });
    child.once("close", (code) => {
      if (code !== 0) return reject(new Error(`fio failed (${code}): ${err}`));
      resolve(JSON.parse(out.slice(out.indexOf("{"))).jobs);
    });
  });
}

const randread = (name, depth, runtimeS, jobs = 1, rampS = 0) => [
  `--name=${name}`,
  `--ramp_time=${rampS}`,
  "--rw=randread",
  "--bs=4k",
  `--iodepth=${depth}`,
  `--numjobs=${jobs}`,
  "--time_based",
  `--runtime=${runtimeS}`,
  "--norandommap",
  "--randrepeat=0",
];

function victimOf(jobs) {
  const read = jobs[0].read;
  return { iops: Math.round(read.iops), p99Us: Math.round((read.clat_ns.percentile?.["99.000000"] ?? 0) / 1000) };
}

/** The victim's run, beside the flood when `flood` is given: the flood starts first and ends after it. */
async function contend(uri, flood) {
  const floods = flood.map((name) =>
    fio(uri(name), randread(`flood-${name}`, FLOOD_DEPTH, RAMP_S + RUNTIME_S + 2 * LEAD_S, FLOOD_JOBS / flood.length)),
  );
  const settled = Promise.allSettled(floods);
  try {
    if (flood.length > 0) await sleep(LEAD_S * 1000);
    const victim = victimOf(await fio(uri("victim"), randread("victim", VICTIM_DEPTH, RUNTIME_S, 1, RAMP_S)));
    const floodIops = (await Promise.all(floods)).reduce((sum, jobs) => sum + jobs[0].read.iops, 0);
    return { ...victim, floodIops: Math.round(floodIops) };
  } finally {
    await settled;
  }
}

async function main() {
  if (FLOOD_JOBS % FLOOD_VOLUMES !== 0) throw new Error(`${FLOOD_JOBS} flood jobs do not split over ${FLOOD_VOLUMES} volumes`);
  const k = await startKeelsond({ poolSize: "4G", prefix: "keelson-bench-qos-" });
  try {
    const { client, uri } = k;
    const flood = Array.from({ length: FLOOD_VOLUMES }, (_, i) => `flood-${i}`);
    for (const name of ["victim", ...flood]) {
      await client.createVolume({ name, sizeBytes: VOLUME_BYTES });
      await fio(uri(name), [`--name=prefill-${name}`, "--rw=write", "--bs=1M", "--iodepth=8", `--size=${VOLUME_BYTES}`]);
    }
    const node = await client.getNode();
    const cap = node.pool.capability;
    const free = cap ? Math.floor(cap.iops * (1 - cap.headroom)) : 0;
    console.log(
      `disk capability: ${cap?.iops ?? "?"} IOPS, ${cap?.bytesPerSec ?? "?"} B/s (${cap?.source ?? "none"}); reservations admitted up to ${free} IOPS`,
    );
    const rows = [];
    rows.push({ case: "victim alone", reservationIops: 0, ...(await contend(uri, [])) });
    rows.push({ case: "unreserved beside the flood (control)", reservationIops: 0, ...(await contend(uri, flood)) });
    // A reservation past what the disk's capability admits is asked anyway (the refusal is a row of its own),
    // then run at the most that is admitted: the calibration moves by a third from start to start here.
    const asked = RESERVATIONS.flatMap((r) => (r > free && free > 0 ? [r, Math.floor(free / 1000) * 1000] : [r]));
    for (const reservationIops of asked) {
      try {
        await client.setVolumeQos({ name: "victim", qos: { reservationIops } });
      } catch (error) {
        rows.push({ case: `reserving ${reservationIops}`, reservationIops, refused: error.message });
        continue;
      }
      rows.push({ case: `reserving ${reservationIops} beside the flood`, reservationIops, ...(await contend(uri, flood)) });
      await client.setVolumeQos({ name: "victim", qos: {} });
    }
    const control = rows[1];
    console.log(
      `victim: 4k randread qd${VICTIM_DEPTH}; flood: ${FLOOD_JOBS} jobs x qd${FLOOD_DEPTH} over ${FLOOD_VOLUMES} volumes; ${RUNTIME_S} s each`,
    );
    console.log("case                                        victim IOPS   p99 µs   flood IOPS  vs control  reservation");
    for (const r of rows) {
      if (r.refused) {
        console.log(`${r.case.padEnd(42)}  refused: ${r.refused}`);
        continue;
      }
      const vs = r === rows[0] ? "" : `${(r.iops / control.iops).toFixed(2)}x`;
      const held = r.reservationIops > 0 ? (r.iops >= r.reservationIops ? "held" : "NOT held") : "";
      console.log(
        `${r.case.padEnd(42)}  ${String(r.iops).padStart(11)}  ${String(r.p99Us).padStart(7)}  ${String(r.floodIops).padStart(11)}  ${vs.padStart(10)}  ${held}`,
      );
    }
    const results = {
      machine: `${os.cpus().length} cpus, ${os.cpus()[0]?.model ?? "?"}`,
      runtimeS: RUNTIME_S,
      capability: cap ?? null,
      victimDepth: VICTIM_DEPTH,
      flood: { volumes: FLOOD_VOLUMES, jobs: FLOOD_JOBS, depth: FLOOD_DEPTH },
      rows,
    };
    saveResults("reservations", results);
  } finally {
    await k.stop();
  }
}

main().catch((error) => {
  console.error(error);
  process.exit(1);
});
