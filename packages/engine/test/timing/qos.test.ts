import fs from "node:fs";
import path from "node:path";
import { isKeelsonError, type KeelsonClient } from "@keelson/sdk";
import { describe, expect, it } from "vitest";
import { startDaemon, type TestDaemon, tempDir } from "../helpers/daemon.js";
import { canRun } from "../helpers/env.js";
import { scrape } from "../helpers/metrics.js";
import { NbdTestClient } from "../helpers/nbd-client.js";
import { run } from "../helpers/process.js";

const MIB = 1024 * 1024;

interface FioJob {
  jobname: string;
  read: { iops: number; bw_bytes: number; clat_ns: { percentile: Record<string, number> } };
  write: { iops: number; bw_bytes: number; clat_ns: { percentile: Record<string, number> } };
}

/** Runs fio over NBD with JSON output; one job per entry of `jobs`. */
async function fio(jobs: Array<{ name: string; uri: string; args: string[] }>): Promise<Map<string, FioJob>> {
  const args = ["--output-format=json", "--ioengine=nbd", "--time_based", "--group_reporting=0"];
  for (const j of jobs) args.push(`--name=${j.name}`, `--uri=${j.uri}`, ...j.args);
  const out = await run("fio", args, { timeoutMs: 120_000 });
  const parsed = JSON.parse(out.stdout.slice(out.stdout.indexOf("{"))) as { jobs: FioJob[] };
  return new Map(parsed.jobs.map((j) => [j.jobname, j]));
}

function within(measured: number, configured: number, tolerance: number): boolean {
  return Math.abs(measured - configured) / configured <= tolerance;
}

/**
 * Keeps `depth` 4 KiB reads in flight on one export for `seconds` and counts
 * completions per whole second; `at` runs callbacks at given seconds.
 */
async function readLoad(
  d: TestDaemon,
  volume: string,
  depth: number,
  seconds: number,
  at: Record<number, () => Promise<unknown>> = {},
): Promise<number[]> {
  const c = await NbdTestClient.open(d.nbdAddress, volume);
  const perSecond = new Array<number>(seconds).fill(0);
  const started = performance.now();
  const elapsed = (): number => (performance.now() - started) / 1000;
  const worker = async (w: number): Promise<void> => {
    for (let i = w; elapsed() < seconds; i += depth) {
      const r = await c.read((i % 4096) * 4096, 4096);
      expect(r.error).toBe(0);
      const s = Math.floor(elapsed());
      if (s < seconds) perSecond[s] = (perSecond[s] ?? 0) + 1;
    }
  };
  const timers = Object.entries(at).map(
    ([s, fn]) => new Promise<void>((resolve) => setTimeout(() => fn().then(() => resolve()), Number(s) * 1000)),
  );
  await Promise.all([...Array.from({ length: depth }, (_, w) => worker(w)), ...timers]);
  await c.disconnect();
  return perSecond;
}

async function code(p: Promise<unknown>): Promise<string> {
  return p.then(
    () => "none",
    (e: unknown) => (isKeelsonError(e) ? e.code : String(e)),
  );
}

async function daemon(dir: string, extraArgs: string[] = []): Promise<{ d: TestDaemon; client: KeelsonClient }> {
  // The volumes (2.5 GiB in all) promise more than twice the 1 GiB pool, though the test writes far less than it holds.
  const args = ["--metrics-listen", "127.0.0.1:0", "--overcommit-percent", "400", ...extraArgs];
  const d = await startDaemon({ poolPath: path.join(dir, "pool.img"), poolSize: "1G", dir, extraArgs: args });
  return { d, client: d.client() };
}

describe("QoS", () => {
  it("limits: 2,000 total IOPS, 1,500 write IOPS, 40 MiB/s reads and 50 MiB/s writes, measured by fio over 10 s within 5%", async (t) => {
    if (!canRun({ tools: ["fio"] }, t.task.name)) return t.skip();
    using dir = tempDir("keelson-qos-limits-");
    const { d, client } = await daemon(dir.path);
    try {
      await client.createVolume({ name: "iops", sizeBytes: 256 * MIB, qos: { limits: { totalIops: { rate: 2000 } } } });
      await client.createVolume({ name: "wiops", sizeBytes: 256 * MIB, qos: { limits: { writeIops: { rate: 1500 } } } });
      await client.createVolume({ name: "rbw", sizeBytes: 1024 * MIB, qos: { limits: { readBytesPerSec: { rate: 40 * MIB } } } });
      await client.createVolume({ name: "bw", sizeBytes: 1024 * MIB, qos: { limits: { writeBytesPerSec: { rate: 50 * MIB } } } });
      // All four at once, on one disk: each volume's limit holds regardless of the others.
      const jobs = await fio([
        { name: "iops", uri: d.uri("iops"), args: ["--rw=randread", "--bs=4k", "--iodepth=32", "--runtime=10"] },
        { name: "wiops", uri: d.uri("wiops"), args: ["--rw=randwrite", "--bs=4k", "--iodepth=32", "--runtime=10"] },
        { name: "rbw", uri: d.uri("rbw"), args: ["--rw=read", "--bs=1M", "--iodepth=8", "--runtime=10"] },
        { name: "bw", uri: d.uri("bw"), args: ["--rw=write", "--bs=1M", "--iodepth=8", "--runtime=10"] },
      ]);
      const iops = jobs.get("iops")?.read.iops ?? 0;
      const wiops = jobs.get("wiops")?.write.iops ?? 0;
      const rbw = (jobs.get("rbw")?.read.bw_bytes ?? 0) / MIB;
      const bw = (jobs.get("bw")?.write.bw_bytes ?? 0) / MIB;
      console.log(
        `QoS limits (configured -> measured): total IOPS 2000 -> ${iops.toFixed(0)}; write IOPS 1500 -> ${wiops.toFixed(0)}; ` +
          `read 40 MiB/s -> ${rbw.toFixed(2)}; write 50 MiB/s -> ${bw.toFixed(2)}`,
      );
      expect(within(iops, 2000, 0.05)).toBe(true);
      expect(within(wiops, 1500, 0.05)).toBe(true);
      expect(within(rbw, 40, 0.05)).toBe(true);
      expect(within(bw, 50, 0.05)).toBe(true);
      const status = (await client.getVolume({ name: "iops" })).qosStatus;
      expect(status.delayedIos).toBeGreaterThan(0);
      expect(status.throttledMs).toBeGreaterThan(5000);
      const metrics = await scrape(d);
      expect(metrics.get('keelson_volume_qos_delayed_ios_total{volume="iops"}')).toBe(status.delayedIos);
      expect(metrics.get('keelson_volume_qos_throttled_seconds_total{volume="iops"}')).toBeGreaterThan(5);
    } finally {
      await d.stop();
    }
  }, 120_000);

  it("a limit changed live takes effect within 1 s, and burst: rate 1,000 with bucket 5,000 gives about 6,000 IOs in the first second", async () => {
    using dir = tempDir("keelson-qos-live-");
    const { d, client } = await daemon(dir.path);
    try {
      await client.createVolume({ name: "live", sizeBytes: 64 * MIB, qos: { limits: { readIops: { rate: 1000 } } } });
      let changedAt = 0;
      const perSecond = await readLoad(d, "live", 32, 6, {
        3: async () => {
          await client.setVolumeQos({ name: "live", qos: { limits: { readIops: { rate: 3000 } } } });
          changedAt = performance.now();
        },
      });
      console.log(`QoS live change 1000 -> 3000 IOPS at 3 s: per second ${perSecond.join(", ")}`);
      expect(changedAt).toBeGreaterThan(0);
      const mean = (xs: number[]) => xs.reduce((a, b) => a + b, 0) / xs.length;
      expect(within(mean(perSecond.slice(1, 3)), 1000, 0.05)).toBe(true);
      // The change call returns within the 4th second; the whole 5th and 6th seconds run at the new rate.
      expect(within(mean(perSecond.slice(4, 6)), 3000, 0.05)).toBe(true);

      await client.createVolume({
        name: "burst",
        sizeBytes: 64 * MIB,
        qos: { limits: { readIops: { rate: 1000, burst: 5000 } } },
      });
      const burst = await readLoad(d, "burst", 32, 4);
      console.log(`QoS burst rate 1000 bucket 5000: per second ${burst.join(", ")}`);
      expect(within(burst[0] as number, 6000, 0.05)).toBe(true);
      expect(within(mean(burst.slice(1)), 1000, 0.05)).toBe(true);
    } finally {
      await d.stop();
    }
  }, 120_000);

  it("reservation held end to end: beside 6 jobs x qd64 flooding another volume, a volume reserving IOPS at qd8 gets at least its reservation; the same volume unreserved (the control, same run) gets what arrival order leaves it (issue 16)", async (t) => {
    if (!canRun({ tools: ["fio"] }, t.task.name)) return t.skip();
    using dir = tempDir("keelson-qos-floor-");
    const { d, client } = await daemon(dir.path);
    try {
      await client.createVolume({ name: "victim", sizeBytes: 256 * MIB });
      await client.createVolume({ name: "flood", sizeBytes: 256 * MIB });
      const fill = ["--rw=write", "--bs=1M", "--iodepth=8", "--size=256M", "--time_based=0"];
      await fio([
        { name: "fv", uri: d.uri("victim"), args: fill },
        { name: "ff", uri: d.uri("flood"), args: fill },
      ]);
      // What the disk admits (calibrated at start, O_DIRECT): the reservation is half of it, at most 5,000.
      const cap = (await client.getNode()).pool.capability;
      expect(cap).toBeDefined();
      const admissible = Math.floor((cap?.iops ?? 0) * (1 - (cap?.headroom ?? 0)));
      const reservationIops = Math.min(5000, Math.floor(admissible / 200) * 100);
      expect(reservationIops).toBeGreaterThan(0);
      const contend = async (): Promise<FioJob> => {
        const jobs = await fio([
          {
            name: "victim",
            uri: d.uri("victim"),
            args: ["--rw=randread", "--bs=4k", "--iodepth=8", "--ramp_time=2", "--runtime=8", "--norandommap"],
          },
          {
            name: "flood",
            uri: d.uri("flood"),
            args: ["--rw=randread", "--bs=4k", "--iodepth=64", "--numjobs=6", "--runtime=11", "--norandommap"],
          },
        ]);
        return jobs.get("victim") as FioJob;
      };
      // The control first, with no reservation anywhere: the front schedules nothing.
      const control = await contend();
      await client.setVolumeQos({ name: "victim", qos: { reservationIops } });
      const reserved = await contend();
      const p99 = (j: FioJob) => (j.read.clat_ns.percentile["99.000000"] ?? 0) / 1000;
      const started = [...(await scrape(d)).entries()].filter(([k]) => k.startsWith("keelson_front_started_requests_total"));
      console.log(
        `reservation held end to end: capability ${cap?.iops} IOPS; victim unreserved ${control.read.iops.toFixed(0)} IOPS ` +
          `p99 ${p99(control).toFixed(0)} us; reserving ${reservationIops}: ${reserved.read.iops.toFixed(0)} IOPS ` +
          `p99 ${p99(reserved).toFixed(0)} us; front started ${started.map(([k, v]) => `${k.slice(k.indexOf("by="))} ${v}`).join(", ")}`,
      );
      expect(reserved.read.iops).toBeGreaterThanOrEqual(reservationIops);
      expect(reserved.read.iops).toBeGreaterThan(control.read.iops);
    } finally {
      await d.stop();
    }
  }, 240_000);

  it("admission: reservations beyond capability minus headroom get QOS_ADMISSION_DENIED; deleting a volume frees its reservation; all survives restart", async () => {
    using dir = tempDir("keelson-qos-adm-");
    const classes = path.join(dir.path, "classes.json");
    fs.writeFileSync(
      classes,
      JSON.stringify({ gold: { reservationIops: 3000, weight: 4 }, bronze: { limits: { totalIops: { rate: 500 } } } }),
    );
    let { d, client } = await daemon(dir.path, ["--qos-classes", classes]);
    try {
      const calibrated = (await client.getNode()).pool.capability;
      console.log(`QoS calibration of this pool: ${JSON.stringify(calibrated)}`);
      expect(calibrated?.source).toBe("calibrated");
      expect(calibrated?.iops).toBeGreaterThan(0);
      const node = await client.setDiskCapability({ iops: 10_000, bytesPerSec: 1e9, headroom: 0.1 });
      expect(node.pool.capability).toMatchObject({ iops: 10_000, source: "operator", headroom: 0.1 });
      expect(node.qosClasses.gold?.reservationIops).toBe(3000);
      const gold = await client.createVolume({ name: "g", sizeBytes: 16 * MIB, qosClass: "gold" });
      expect(gold).toMatchObject({ qosClass: "gold", qos: { reservationIops: 3000, weight: 4 } });
      await client.createVolume({ name: "big", sizeBytes: 16 * MIB, qos: { reservationIops: 6000 } });
      expect((await client.getNode()).pool.reservedIops).toBe(9000);
      const metrics = await scrape(d);
      const disk = `pool="${path.join(dir.path, "pool.img")}"`;
      expect(metrics.get(`keelson_disk_reserved_iops{${disk}}`)).toBe(9000);
      expect(metrics.get(`keelson_disk_capability_iops{${disk}}`)).toBe(10_000);
      const denied = await client
        .createVolume({ name: "c", sizeBytes: 16 * MIB, qos: { reservationIops: 100 } })
        .catch((e: unknown) => e);
      expect(isKeelsonError(denied, "QOS_ADMISSION_DENIED")).toBe(true);
      expect((denied as Error).message).toContain("0 IOPS");
      expect(await code(client.setVolumeQos({ name: "big", qos: { reservationIops: 6001 } }))).toBe("QOS_ADMISSION_DENIED");
      expect(await code(client.createVolume({ name: "x", sizeBytes: MIB, qosClass: "platinum" }))).toBe("INVALID_ARGUMENT");
      expect(await code(client.createVolume({ name: "x", sizeBytes: MIB, qos: { weight: -2 } }))).toBe("INVALID_ARGUMENT");
      expect(await code(client.setDiskCapability({ iops: -1, bytesPerSec: 1 }))).toBe("INVALID_ARGUMENT");
      await client.deleteVolume({ name: "g" });
      await client.createVolume({ name: "c", sizeBytes: 16 * MIB, qos: { reservationIops: 3000 } });
      // Policies and the capability are stored with the pool: a restart keeps them and does not recalibrate.
      await d.stop();
      ({ d, client } = await daemon(dir.path, ["--qos-classes", classes]));
      expect(d.log()).not.toContain("disk calibrated");
      expect((await client.getNode()).pool).toMatchObject({ reservedIops: 9000, capability: { iops: 10_000 } });
      expect((await client.getVolume({ name: "c" })).qos.reservationIops).toBe(3000);
    } finally {
      await d.stop();
    }
  }, 120_000);
});
