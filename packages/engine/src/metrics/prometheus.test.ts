import fs from "node:fs";
import os from "node:os";
import path from "node:path";
import { Registry } from "prom-client";
import { afterEach, beforeEach, describe, expect, it } from "vitest";
import { NbdServer } from "../nbd/server.js";
import { admitReservation } from "../qos/admission.js";
import { defaultPolicy } from "../qos/policy.js";
import { QosManager } from "../qos/qos-manager.js";
import { ReplicaClient } from "../replication/replica-client.js";
import { ReplicatedVolume } from "../replication/replicated-volume.js";
import { Pool } from "../store/pool.js";
import { SpaceAlarm } from "../store/space-alarm.js";
import { readVolume } from "../store/volume-io.js";
import { openLocalReplica, TargetCatalog } from "../target/catalog.js";
import { type ReplicaAuthority, ReplicaCatalog } from "../target/replica-catalog.js";
import { gauge } from "./families.js";
import { engineRegistry, serveMetrics } from "./prometheus.js";

const MIB = 1024 * 1024;
const BLOCK = 4096;
let dir: string;
/** Closed after each test, last opened first. */
let cleanups: Array<() => Promise<void> | void> = [];

beforeEach(() => {
  dir = fs.mkdtempSync(path.join(os.tmpdir(), "keelson-metrics-"));
});
afterEach(async () => {
  for (const c of cleanups.reverse()) await c();
  cleanups = [];
  fs.rmSync(dir, { recursive: true, force: true });
});

async function openPool(name: string, sizeBytes = 64 * MIB): Promise<Pool> {
  const pool = await Pool.open({ admit: admitReservation, path: path.join(dir, `${name}.img`), createSizeBytes: sizeBytes });
  cleanups.push(() => pool.close());
  return pool;
}

/** One series of an exposition: its name, labels in the order shown, and value. */
interface Series {
  name: string;
  labels: Array<[string, string]>;
  value: number;
}

interface Family {
  help: string;
  type: string;
  series: Series[];
}

const NAME = /^[a-zA-Z_:][a-zA-Z0-9_:]*$/;
const LABEL = /^([a-zA-Z_][a-zA-Z0-9_]*)="((?:[^"\\]|\\.)*)"/;
const SUFFIXES: Record<string, readonly string[]> = { counter: [""], gauge: [""], histogram: ["_bucket", "_sum", "_count"] };

function parseValue(text: string): number {
  if (text === "+Inf") return Number.POSITIVE_INFINITY;
  if (text === "-Inf") return Number.NEGATIVE_INFINITY;
  const value = Number(text);
  if (text === "" || Number.isNaN(value)) throw new Error(`not a sample value: "${text}"`);
  return value;
}

/** `name{labels} value` -> its parts; throws on what the text format does not allow. */
function parseSeries(line: string): Series & { key: string } {
  const brace = line.indexOf("{");
  const space = line.lastIndexOf(" ");
  const name = line.slice(0, brace >= 0 ? brace : space);
  if (!NAME.test(name)) throw new Error(`bad metric name in "${line}"`);
  const labels: Array<[string, string]> = [];
  if (brace >= 0) {
    let rest = line.slice(brace + 1);
    while (!rest.startsWith("}")) {
      const m = LABEL.exec(rest);
      if (!m) throw new Error(`bad labels in "${line}"`);
      labels.push([m[1] as string, (m[2] as string).replace(/\\(.)/g, (_, c: string) => (c === "n" ? "\n" : c))]);
      rest = rest.slice(m[0].length);
      if (rest.startsWith(",")) rest = rest.slice(1);
    }
    if (rest.length < 2 || rest[1] !== " ") throw new Error(`nothing after the labels in "${line}"`);
  }
  return { key: line.slice(0, space), name, labels, value: parseValue(line.slice(space + 1)) };
}

/**
 * Reads a text exposition (format 0.0.4) strictly: each family once, HELP
 * then TYPE before its samples, sample names the family's (with a histogram's
 * suffixes), no series twice. Returns the families and the samples by
 * `name{labels}` as a scraper keys them.
 */
function parseExposition(text: string): { families: Map<string, Family>; samples: Map<string, number> } {
  const families = new Map<string, Family>();
  const samples = new Map<string, number>();
  let current: { name: string; family: Family } | null = null;
  let help: { name: string; text: string } | null = null;
  expect(text.endsWith("\n"), "the exposition ends with a newline").toBe(true);
  for (const line of text.split("\n")) {
    if (line === "") continue;
    const meta = /^# (HELP|TYPE) (\S+) (.*)$/.exec(line);
    if (meta) {
      const [, what, name, rest] = meta as unknown as [string, string, string, string];
      if (what === "HELP") {
        if (families.has(name)) throw new Error(`family ${name} appears twice`);
        help = { name, text: rest };
        continue;
      }
      if (help?.name !== name) throw new Error(`TYPE of ${name} without its HELP just before`);
      if (!(rest in SUFFIXES)) throw new Error(`${name}: unexpected type ${rest}`);
      const family: Family = { help: help.text, type: rest, series: [] };
      families.set(name, family);
      current = { name, family };
      help = null;
      continue;
    }
    if (line.startsWith("#")) throw new Error(`unexpected comment "${line}"`);
    const s = parseSeries(line);
    if (!current) throw new Error(`sample before any TYPE: "${line}"`);
    const suffixes = SUFFIXES[current.family.type] as readonly string[];
    if (!suffixes.some((x) => s.name === `${current?.name}${x}`)) throw new Error(`"${line}" is not of family ${current.name}`);
    if (samples.has(s.key)) throw new Error(`series ${s.key} twice`);
    samples.set(s.key, s.value);
    current.family.series.push(s);
  }
  for (const [name, f] of families) if (f.type === "histogram") checkHistogram(name, f);
  return { families, samples };
}

/** Per label set: `le` ascending to "+Inf", counts cumulative, "+Inf" equal to `_count`, and a `_sum`. */
function checkHistogram(name: string, f: Family): void {
  const groups = new Map<string, { les: number[]; counts: number[]; sum?: number; count?: number }>();
  for (const s of f.series) {
    const key = JSON.stringify(s.labels.filter(([k]) => k !== "le"));
    const g = groups.get(key) ?? { les: [], counts: [] };
    groups.set(key, g);
    if (s.name === `${name}_bucket`) {
      const le = s.labels.find(([k]) => k === "le");
      if (!le) throw new Error(`${name}_bucket without le`);
      g.les.push(parseValue(le[1]));
      g.counts.push(s.value);
    } else if (s.name === `${name}_sum`) g.sum = s.value;
    else g.count = s.value;
  }
  for (const [labels, g] of groups) {
    const what = `${name}${labels}`;
    expect(g.les.at(-1), `${what}: the last bucket is le="+Inf"`).toBe(Number.POSITIVE_INFINITY);
    for (let i = 1; i < g.les.length; i++) {
      expect(g.les[i] as number, `${what}: le ascending`).toBeGreaterThan(g.les[i - 1] as number);
      expect(g.counts[i] as number, `${what}: buckets cumulative`).toBeGreaterThanOrEqual(g.counts[i - 1] as number);
    }
    expect(g.count, `${what}: _count is the +Inf bucket`).toBe(g.counts.at(-1));
    expect(g.sum, `${what}: has a _sum`).toBeTypeOf("number");
  }
}

/**
 * A replicated volume "rv" with two replicas over real local stores: node a's
 * in-process (this engine's own pool), node b's over NBD on loopback, as a
 * peer's would be. `restartB` brings b's listener back on a new port, where
 * the frontend's repair pass finds it.
 */
async function replicated(poolA: Pool, qosA: QosManager) {
  const poolB = await openPool("b");
  await poolA.createVolume({ name: "rv", sizeBytes: 4 * MIB });
  await poolB.createVolume({ name: "rv", sizeBytes: 4 * MIB });
  // As an attach does: every replica fenced at the frontend's epoch first.
  await poolA.fenceVolume("rv", 1);
  await poolB.fenceVolume("rv", 1);
  qosA.apply(poolA.getVolume("rv").record.uid, defaultPolicy());
  // The cluster's authority (etcd) is stood in for by one that lets a write.
  const authority: ReplicaAuthority = { grant: async () => "write", isNode: async () => undefined };
  const listenB = async () => {
    const server = new NbdServer(new ReplicaCatalog(poolB, new QosManager(32), authority).forClient);
    await server.listen({ tcp: "127.0.0.1:0" });
    cleanups.push(() => server.close());
    return server;
  };
  let serverB = await listenB();
  const rv = await ReplicatedVolume.open(
    "rv",
    1,
    [
      { nodeId: "a", replicaAddress: "", inSync: true },
      { nodeId: "b", replicaAddress: serverB.tcpAddress, inSync: true },
    ],
    "a",
    {
      openLocal: (name) => openLocalReplica(poolA, qosA, name),
      hooks: { prepareReplica: async (nodeId) => ({ nodeId, replicaAddress: serverB.tcpAddress }) },
    },
  );
  cleanups.push(() => rv.close());
  return {
    rv,
    poolB,
    stopB: () => serverB.close(),
    restartB: async () => {
      serverB = await listenB();
    },
  };
}

async function until(what: string, check: () => Promise<boolean>, timeoutMs = 30_000): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  while (!(await check())) {
    if (Date.now() > deadline) throw new Error(`gave up waiting for ${what}`);
    await new Promise((r) => setTimeout(r, 50));
  }
}

function pattern(seed: number, length = BLOCK): Buffer {
  return Buffer.alloc(length, seed & 0xff);
}

describe("the engine's registry", () => {
  it("renders a valid exposition of a pool, its volumes' requests (a real NBD round trip) and a replicated volume's replicas through a fault and a rebuild", async () => {
    const pool = await openPool("a");
    const qos = new QosManager(32);
    await pool.createVolume({ name: "plain", sizeBytes: 4 * MIB });
    qos.apply(pool.getVolume("plain").record.uid, defaultPolicy());
    const { rv, poolB, stopB, restartB } = await replicated(pool, qos);
    const catalog = new TargetCatalog<ReplicatedVolume>(pool, qos);
    catalog.frontends.set("rv", rv);
    const registry = engineRegistry({
      pool,
      qos,
      alarm: new SpaceAlarm(),
      nbd: { bufferedBytes: 0, bufferLimitBytes: 256 * MIB },
      frontends: catalog.frontends,
    });
    const scrape = async () => parseExposition(await registry.metrics());

    // Requests through a real NBD connection: 3 writes, 2 reads of what was written, a flush.
    const server = new NbdServer((peer) => catalog.forClient(peer));
    await server.listen({ tcp: "127.0.0.1:0" });
    cleanups.push(() => server.close());
    const client = await ReplicaClient.connect(server.tcpAddress, "plain", 5_000);
    cleanups.push(() => client.close());
    for (let i = 0; i < 3; i++) await client.write(i * BLOCK, pattern(i + 1), false);
    expect(await client.read(0, BLOCK)).toEqual(pattern(1));
    expect(await client.read(2 * BLOCK, BLOCK)).toEqual(pattern(3));
    await client.flush();
    await rv.write(0, pattern(0x41), false);
    expect(await rv.read(0, BLOCK)).toEqual(pattern(0x41));

    const first = await scrape();
    const get = (key: string) => first.samples.get(key);
    for (const [name, f] of first.families) {
      expect(f.help, `${name} has a HELP text`).not.toBe("");
      expect(name.startsWith("keelson_"), name).toBe(true);
    }
    expect(first.families.get("keelson_volume_request_duration_seconds")?.type).toBe("histogram");
    expect(get('keelson_volume_write_requests_total{volume="plain"}')).toBe(3);
    expect(get('keelson_volume_write_bytes_total{volume="plain"}')).toBe(3 * BLOCK);
    expect(get('keelson_volume_read_requests_total{volume="plain"}')).toBe(2);
    expect(get('keelson_volume_flush_requests_total{volume="plain"}')).toBe(1);
    expect(get('keelson_volume_requests_in_flight{volume="plain"}')).toBe(0);
    expect(get('keelson_volume_request_duration_seconds_count{volume="plain",op="write"}')).toBe(3);
    expect(get('keelson_volume_request_duration_seconds_bucket{volume="plain",op="read",le="+Inf"}')).toBe(2);
    expect(get('keelson_volume_request_duration_seconds_bucket{volume="plain",op="zero",le="0.00005"}')).toBe(0);
    // The frontend's write reached this node's replica in-process: its volume counts it.
    expect(get('keelson_volume_write_requests_total{volume="rv"}')).toBe(1);
    expect(get(`keelson_pool_bytes{pool="${pool.device.path}",state="total"}`)).toBe(pool.space().totalBytes);
    expect(get("keelson_nbd_buffer_limit_bytes")).toBe(256 * MIB);
    for (const replica of ["a", "b"]) {
      expect(get(`keelson_replica_state{volume="rv",replica="${replica}",state="healthy"}`), replica).toBe(1);
      expect(get(`keelson_replica_state{volume="rv",replica="${replica}",state="faulted"}`), replica).toBe(0);
      expect(get(`keelson_replica_in_sync{volume="rv",replica="${replica}"}`), replica).toBe(1);
    }
    expect(get('keelson_replicated_volume_state{volume="rv",state="healthy"}')).toBe(1);
    expect(get('keelson_replicated_volume_rebuilds_total{volume="rv"}')).toBe(0);

    // b goes away: the next write faults it, and the volume runs degraded on a.
    await stopB();
    await rv.write(BLOCK, pattern(0x42), false);
    const degraded = (await scrape()).samples;
    expect(degraded.get('keelson_replica_state{volume="rv",replica="b",state="faulted"}')).toBe(1);
    expect(degraded.get('keelson_replica_state{volume="rv",replica="b",state="healthy"}')).toBe(0);
    expect(degraded.get('keelson_replica_in_sync{volume="rv",replica="b"}')).toBe(0);
    expect(degraded.get('keelson_replica_in_sync{volume="rv",replica="a"}')).toBe(1);
    expect(degraded.get('keelson_replicated_volume_state{volume="rv",state="degraded"}')).toBe(1);

    // b is back: the repair pass rebuilds what it missed; the rebuild's progress stays shown.
    await restartB();
    await until(
      "b in sync again",
      async () => (await scrape()).samples.get('keelson_replica_in_sync{volume="rv",replica="b"}') === 1,
    );
    const rebuilt = (await scrape()).samples;
    const planned = rebuilt.get('keelson_replica_rebuild_planned_bytes{volume="rv",replica="b"}');
    expect(planned).toBeGreaterThan(0);
    expect(rebuilt.get('keelson_replica_rebuild_copied_bytes{volume="rv",replica="b"}')).toBe(planned);
    expect(rebuilt.get('keelson_replicated_volume_rebuilds_total{volume="rv"}')).toBe(1);
    expect(rebuilt.get('keelson_replicated_volume_state{volume="rv",state="healthy"}')).toBe(1);
    // The write b missed is on b now.
    const onB = Buffer.alloc(BLOCK);
    await new Promise<void>((resolve, reject) =>
      readVolume(poolB, poolB.getVolume("rv"), BLOCK, BLOCK, onB, 0, (e) => (e ? reject(e) : resolve())),
    );
    expect(onB).toEqual(pattern(0x42));

    // Detached (closed): gone from the next scrape.
    rv.close();
    expect([...(await scrape()).samples.keys()].filter((k) => k.includes("replica"))).toEqual([]);
  });
});

describe("serveMetrics", () => {
  it("serves GET /metrics with the registry's content type, 404 for anything else, and 500 with the message when a collect fails", async () => {
    const registry = new Registry();
    let fail = false;
    gauge(registry, {
      name: "keelson_test_value",
      help: "A test value.",
      labelNames: ["kind"],
      read: () => {
        if (fail) throw new Error("the pool is closed");
        return [[{ kind: "x" }, 7]];
      },
    });
    const served = await serveMetrics({ address: "127.0.0.1:0", registry });
    cleanups.push(() => served.close());
    const url = `http://${served.address}`;
    const ok = await fetch(`${url}/metrics`);
    expect(ok.status).toBe(200);
    expect(ok.headers.get("content-type")).toBe(registry.contentType);
    expect(parseExposition(await ok.text()).samples.get('keelson_test_value{kind="x"}')).toBe(7);
    expect((await fetch(`${url}/other`)).status).toBe(404);
    expect((await fetch(`${url}/metrics`, { method: "POST" })).status).toBe(404);
    fail = true;
    const failed = await fetch(`${url}/metrics`);
    expect(failed.status).toBe(500);
    expect(await failed.text()).toContain("the pool is closed");
    fail = false;
    expect((await fetch(`${url}/metrics`)).status, "it serves on after a failed scrape").toBe(200);
  });
});

describe("scrape cost", () => {
  it("200 volumes: one scrape reads every family (prints its time; not asserted)", async () => {
    const pool = await openPool("many", 512 * MIB);
    const qos = new QosManager(32);
    for (let i = 0; i < 200; i++) {
      const v = await pool.createVolume({ name: `v${i}`, sizeBytes: MIB });
      qos.apply(v.record.uid, defaultPolicy());
      for (let r = 0; r < 100; r++) v.io.readLatency.observe((r + 1) * 1e-5);
    }
    const registry = engineRegistry({ pool, qos, alarm: new SpaceAlarm() });
    let text = await registry.metrics();
    const runs = 50;
    const started = process.hrtime.bigint();
    for (let i = 0; i < runs; i++) text = await registry.metrics();
    const msPerScrape = Number(process.hrtime.bigint() - started) / 1e6 / runs;
    const { samples } = parseExposition(text);
    expect(samples.get('keelson_volume_request_duration_seconds_count{volume="v199",op="read"}')).toBe(100);
    console.log(
      `scrape of 200 volumes: ${msPerScrape.toFixed(2)} ms, ${samples.size} samples, ${(text.length / 1024).toFixed(0)} KiB (mean of ${runs})`,
    );
  });
});
