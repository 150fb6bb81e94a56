import fs from "node:fs";
import os from "node:os";
import path from "node:path";
import { describe, expect, it } from "vitest";
import { LocalCluster, type StartedLocalCluster } from "../../src/local-cluster/local-cluster.js";
import { trackClusters } from "../helpers/clusters.js";
import { canRun } from "../helpers/env.js";
import { NbdTestClient } from "../helpers/nbd-client.js";
import { CHUNK, readAll, stamp } from "../helpers/stamps.js";
import { waitFor } from "../helpers/wait.js";

const MIB = 1024 * 1024;
const SIZE = 16 * MIB;
/** Bound on the replica's return and rebuild: a failure bound, not a timing claim. */
const REBUILD_WAIT_MS = 60_000;

const track = trackClusters();

/**
 * Node `index`'s `/metrics` address: its keelsond listens on every address of
 * its own host (`--metrics-listen 0.0.0.0:0`) and says the port in its ready
 * file; it is reached on the node's own address.
 */
function metricsAddress(cluster: StartedLocalCluster, index: number): string {
  const ready: unknown = JSON.parse(fs.readFileSync(path.join(cluster.state.dir, `node${index + 1}.ready`), "utf8"));
  const bound = typeof ready === "object" && ready !== null && "metricsAddress" in ready ? ready.metricsAddress : null;
  if (typeof bound !== "string" || bound === "") throw new Error(`node${index + 1} serves no /metrics: ${JSON.stringify(ready)}`);
  return `${cluster.nodes[index]?.address}:${bound.slice(bound.lastIndexOf(":") + 1)}`;
}

/** One Prometheus scrape of `address`: `name{labels}` to value. */
async function scrapeAt(address: string): Promise<Map<string, number>> {
  const res = await fetch(`http://${address}/metrics`);
  if (res.status !== 200) throw new Error(`GET /metrics on ${address}: HTTP ${res.status}`);
  const samples = new Map<string, number>();
  for (const line of (await res.text()).split("\n")) {
    if (line.startsWith("#") || line.trim() === "") continue;
    const at = line.lastIndexOf(" ");
    samples.set(line.slice(0, at), Number(line.slice(at + 1)));
  }
  return samples;
}

const replica = (metric: string, nodeId: string, extra = "") => `${metric}{volume="db",replica="${nodeId}"${extra}}`;
const stateOf = (nodeId: string, state: string) => replica("keelson_replica_state", nodeId, `,state="${state}"`);

describe("replica metrics of a replicated volume", () => {
  it("a replica's node stopped and started: /metrics on the frontend's node shows it healthy, faulted while away, then rebuilt and in sync; no acknowledged write lost", async (t) => {
    if (!canRun({ root: true, tools: ["etcd", "ip", "losetup"] }, t.task.name)) return t.skip();
    const dir = path.join(os.tmpdir(), `keelson-rmetrics-${process.pid}-${Date.now()}`);
    const cluster = track(
      await LocalCluster.start({
        nodes: 3,
        dir,
        diskSizeBytes: 256 * MIB,
        leaseTtlS: 2,
        keelsondArgs: ["--metrics-listen", "0.0.0.0:0"],
      }),
    );
    const c1 = cluster.client(0);
    await c1.createVolume({ name: "db", sizeBytes: SIZE, replicas: 3 });
    const attachment = await c1.attachVolume({ name: "db", replicaTimeoutMs: 2000 });
    const nodeIds = attachment.replicas.map((r) => r.nodeId).sort();
    expect(nodeIds).toEqual(["node1", "node2", "node3"]);
    const metrics = metricsAddress(cluster, 0);
    const nbd = await NbdTestClient.open(cluster.nodes[0]?.nbdAddress as string, "db");
    expect((await nbd.write(0, stamp(1))).error).toBe(0);

    const healthy = await scrapeAt(metrics);
    for (const id of nodeIds) {
      expect(healthy.get(stateOf(id, "healthy")), id).toBe(1);
      expect(healthy.get(stateOf(id, "faulted")), id).toBe(0);
      expect(healthy.get(stateOf(id, "rebuilding")), id).toBe(0);
      expect(healthy.get(replica("keelson_replica_in_sync", id)), id).toBe(1);
    }
    expect(healthy.get('keelson_replicated_volume_state{volume="db",state="healthy"}')).toBe(1);

    // node3 away: the writes it misses fault it, and the volume runs degraded on the other two.
    await cluster.stopNode(2);
    for (let i = 1; i <= 8; i++) expect((await nbd.write(i * CHUNK, stamp(100 + i))).error, `write ${i}`).toBe(0);
    const away = await waitFor(
      async () => {
        const s = await scrapeAt(metrics);
        return s.get(stateOf("node3", "faulted")) === 1 ? s : null;
      },
      { what: "node3 faulted in node1's metrics", timeoutMs: REBUILD_WAIT_MS },
    );
    expect(away.get(replica("keelson_replica_in_sync", "node3"))).toBe(0);
    expect(away.get(stateOf("node3", "healthy"))).toBe(0);
    expect(away.get(replica("keelson_replica_in_sync", "node2"))).toBe(1);
    expect(away.get('keelson_replicated_volume_state{volume="db",state="degraded"}')).toBe(1);

    // node3 back: rebuilt while I/O goes on, then in sync again; its rebuild's progress stays shown.
    await cluster.startNode(2);
    const seen = new Set<string>();
    const back = await waitFor(
      async () => {
        const s = await scrapeAt(metrics);
        for (const state of ["faulted", "rebuilding", "healthy"]) if (s.get(stateOf("node3", state)) === 1) seen.add(state);
        return s.get(replica("keelson_replica_in_sync", "node3")) === 1 ? s : null;
      },
      { what: "node3 in sync again in node1's metrics", timeoutMs: REBUILD_WAIT_MS, intervalMs: 20 },
    );
    const planned = back.get(replica("keelson_replica_rebuild_planned_bytes", "node3")) ?? 0;
    expect(planned, "the rebuild set out to copy what node3 missed").toBeGreaterThan(0);
    expect(back.get(replica("keelson_replica_rebuild_copied_bytes", "node3")), `states seen: ${[...seen].join(", ")}`).toBe(
      planned,
    );
    expect(back.get(stateOf("node3", "healthy"))).toBe(1);
    expect(back.get('keelson_replicated_volume_rebuilds_total{volume="db"}')).toBeGreaterThanOrEqual(1);
    expect(back.get('keelson_replicated_volume_state{volume="db",state="healthy"}')).toBe(1);

    // Every acknowledged write reads back through the frontend, and node3's replica holds the same bytes as node1's.
    expect((await nbd.read(0, CHUNK)).data.equals(stamp(1))).toBe(true);
    for (let i = 1; i <= 8; i++) expect((await nbd.read(i * CHUNK, CHUNK)).data.equals(stamp(100 + i)), `chunk ${i}`).toBe(true);
    // The frontend's own request figures: the 9 writes and 9 reads this client made, each timed, none left in flight.
    const served = await scrapeAt(metrics);
    const frontend = (metric: string, extra = "") => served.get(`keelson_replicated_volume_${metric}{volume="db"${extra}}`);
    expect({
      writes: frontend("write_requests_total"),
      writeBytes: frontend("write_bytes_total"),
      reads: frontend("read_requests_total"),
      readBytes: frontend("read_bytes_total"),
      inFlight: frontend("requests_in_flight"),
      timedWrites: frontend("request_duration_seconds_count", ',op="write"'),
      timedReads: frontend("request_duration_seconds_count", ',op="read"'),
    }).toEqual({
      writes: 9,
      writeBytes: 9 * CHUNK,
      reads: 9,
      readBytes: 9 * CHUNK,
      inFlight: 0,
      timedWrites: 9,
      timedReads: 9,
    });
    await nbd.disconnect();
    const epoch = (await c1.getAttachment({ name: "db" })).epoch;
    const onNode1 = await readAll(cluster.nodes[0]?.nbdSocket as string, `db#${epoch}`, SIZE);
    const onNode3 = await readAll(cluster.nodes[2]?.nbdSocket as string, `db#${epoch}`, SIZE);
    expect(onNode3.equals(onNode1), "node3's rebuilt replica equals node1's").toBe(true);
    await c1.detachVolume({ name: "db" });
    const detached = await scrapeAt(metrics);
    expect([...detached.keys()].filter((k) => k.includes('volume="db",replica='))).toEqual([]);
    expect([...detached.keys()].filter((k) => k.startsWith("keelson_replicated_volume_") && k.includes('volume="db"'))).toEqual(
      [],
    );
  }, 180_000);
});
