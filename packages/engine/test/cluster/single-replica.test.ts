// A cluster volume with one replica (CreateVolume with replicated: true):
// the same frontend as more replicas, attachable on any node, its one
// replica reached over the replica protocol from the others.
import os from "node:os";
import path from "node:path";
import type { KeelsonClient } from "@keelson/sdk";
import { describe, expect, it } from "vitest";
import { LocalCluster, type StartedLocalCluster } from "../../src/local-cluster/local-cluster.js";
import { trackClusters } from "../helpers/clusters.js";
import { canRun } from "../helpers/env.js";
import { codeOf } from "../helpers/errors.js";
import { NbdTestClient } from "../helpers/nbd-client.js";
import { run } from "../helpers/process.js";
import { CHUNK, stamp } from "../helpers/stamps.js";

const MIB = 1024 * 1024;
const SIZE = 16 * MIB;
/** Bound on waiting for a restarted engine and the frontend's repair passes: a failure bound, not a timing claim. */
const RECOVERY_WAIT_MS = 60_000;

const KEELSON = path.resolve(path.dirname(new URL(import.meta.url).pathname), "../../dist/cli/keelson.js");

const track = trackClusters();
const needs = { root: true, tools: ["etcd", "ip", "losetup"] };

async function startCluster(tag: string): Promise<StartedLocalCluster> {
  const dir = path.join(os.tmpdir(), `keelson-one-${tag}-${process.pid}-${Date.now()}`);
  return track(await LocalCluster.start({ nodes: 3, dir, diskSizeBytes: 256 * MIB, leaseTtlS: 2 }));
}

/** Whether node `c`'s own pool holds volume `name` (its replica): only a local volume has a uid. */
async function holdsReplica(c: KeelsonClient, name: string): Promise<boolean> {
  try {
    return (await c.getVolume({ name, replicaOnly: true })).uid !== "";
  } catch {
    return false;
  }
}

/** Indexes of the nodes whose pools hold a replica of `name`. */
async function holders(cluster: StartedLocalCluster, name: string): Promise<number[]> {
  const held = await Promise.all(cluster.nodes.map((_, i) => holdsReplica(cluster.client(i), name)));
  return held.flatMap((h, i) => (h ? [i] : []));
}

async function waitFor(what: string, check: () => Promise<boolean>): Promise<void> {
  const deadline = Date.now() + RECOVERY_WAIT_MS;
  while (!(await check())) {
    if (Date.now() > deadline) throw new Error(`gave up waiting: ${what}`);
    await new Promise((r) => setTimeout(r, 250));
  }
}

async function readsBack(nbd: NbdTestClient, offset: number, want: Buffer): Promise<boolean> {
  const r = await nbd.read(offset, want.length);
  return r.error === 0 && r.data.equals(want);
}

describe("a cluster volume with one replica (replicated: true)", () => {
  it("attached on a node without its replica and on the replica's node: writes read back through either; snapshot, clone, resize and delete as for more replicas; every node shows it healthy with 1 replica", async (t) => {
    if (!canRun(needs, t.task.name)) return t.skip();
    const cluster = await startCluster("life");
    const client = (i: number) => cluster.client(i);
    const node = (i: number) => cluster.nodes[i] as (typeof cluster.nodes)[number];

    const created = await client(0).createVolume({ name: "one", sizeBytes: SIZE, replicas: 1, replicated: true });
    expect([created.replicas, created.replicated]).toEqual([1, true]);
    const [holder, ...more] = await holders(cluster, "one");
    expect(holder, "one node holds its replica").toBeDefined();
    expect(more).toEqual([]);
    const away = [0, 1, 2].find((i) => i !== holder) as number;
    const third = [0, 1, 2].find((i) => i !== holder && i !== away) as number;
    for (const i of [0, 1, 2]) {
      const v = await client(i).getVolume({ name: "one" });
      expect([v.replicas, v.replicated, v.state], `getVolume through node${i + 1}`).toEqual([1, true, "healthy"]);
    }
    // The same create again, through another node, returns the volume (idempotent).
    expect((await client(away).createVolume({ name: "one", sizeBytes: SIZE, replicas: 1, replicated: true })).replicated).toBe(
      true,
    );

    // Served on a node that holds no replica: its frontend reaches the replica over the replica protocol.
    const attached = await client(holder as number).attachVolume({ name: "one", nodeId: node(away).nodeId });
    expect(attached.nodeId).toBe(node(away).nodeId);
    expect(attached.replicas.map((r) => [r.nodeId, r.state])).toEqual([[node(holder as number).nodeId, "healthy"]]);
    const there = await NbdTestClient.open(node(away).nbdAddress, "one");
    expect(there.sizeBytes).toBe(SIZE);
    for (let i = 0; i < 8; i++) expect((await there.write(i * MIB, stamp(i + 1))).error).toBe(0);
    expect((await there.flush()).error).toBe(0);
    for (let i = 0; i < 8; i++) expect(await readsBack(there, i * MIB, stamp(i + 1)), `chunk ${i} on node${away + 1}`).toBe(true);

    const snapshot = await client(third).createSnapshot({ volume: "one", name: "s1" });
    expect(snapshot.holders).toEqual([node(holder as number).nodeId]);
    expect((await there.write(0, stamp(100))).error).toBe(0);
    expect((await client(third).resizeVolume({ name: "one", sizeBytes: 2 * SIZE })).sizeBytes).toBe(2 * SIZE);
    const grown = await NbdTestClient.open(node(away).nbdAddress, "one");
    expect(grown.sizeBytes).toBe(2 * SIZE);
    expect((await grown.write(SIZE + CHUNK, stamp(200))).error, "a write beyond the old end").toBe(0);
    expect((await grown.flush()).error).toBe(0);
    await grown.disconnect();
    await there.disconnect();
    for (const i of [0, 1, 2]) {
      const v = await client(i).getVolume({ name: "one" });
      expect([v.sizeBytes, v.replicas, v.state], `attached, through node${i + 1}`).toEqual([2 * SIZE, 1, "healthy"]);
    }
    await client(third).detachVolume({ name: "one", nodeId: node(away).nodeId });

    // Served on the replica's own node (in-process): the same bytes.
    await client(holder as number).attachVolume({ name: "one" });
    const home = await NbdTestClient.open(node(holder as number).nbdAddress, "one");
    expect(home.sizeBytes).toBe(2 * SIZE);
    expect(await readsBack(home, 0, stamp(100)), "the write after the snapshot").toBe(true);
    for (let i = 1; i < 8; i++)
      expect(await readsBack(home, i * MIB, stamp(i + 1)), `chunk ${i} on the replica's node`).toBe(true);
    expect(await readsBack(home, SIZE + CHUNK, stamp(200)), "the write beyond the old end").toBe(true);
    await home.disconnect();

    // A one-replica clone of its snapshot, read on yet another node: the snapshot's data.
    const clone = await client(away).createVolume({
      name: "one-s1",
      sizeBytes: 0,
      replicas: 1,
      replicated: true,
      source: { snapshot: { volume: "one", name: "s1" } },
    });
    expect([clone.sizeBytes, clone.replicas, clone.replicated]).toEqual([SIZE, 1, true]);
    await client(third).attachVolume({ name: "one-s1" });
    const copy = await NbdTestClient.open(node(third).nbdAddress, "one-s1");
    expect(await readsBack(copy, 0, stamp(1)), "the clone holds the snapshot's data, not the later write").toBe(true);
    await copy.disconnect();
    await client(third).detachVolume({ name: "one-s1" });
    await client(third).deleteVolume({ name: "one-s1" });

    // Deleted through a node without the replica, while attached (force): the replica and the records go.
    expect(await codeOf(client(away).deleteVolume({ name: "one" }))).toBe("VOLUME_IN_USE");
    await client(away).deleteVolume({ name: "one", force: true });
    expect(await holders(cluster, "one")).toEqual([]);
    expect(await holders(cluster, "one-s1")).toEqual([]);
    for (const i of [0, 1, 2]) expect(await codeOf(client(i).getVolume({ name: "one" }))).toBe("VOLUME_NOT_FOUND");

    // The CLI's --replicated makes the same kind of volume.
    const cli = await run(
      process.execPath,
      [KEELSON, "--address", node(away).grpcAddress, "--json", "volume", "create", "cli-one", "--size", "16M", "--replicated"],
      { timeoutMs: 60_000 },
    );
    expect(JSON.parse(cli.stdout)).toMatchObject({ name: "cli-one", replicas: 1, replicated: true });
    expect((await holders(cluster, "cli-one")).length).toBe(1);
  }, 180_000);

  it("its replica's engine killed under a writer on another node: writes fail while it is down, no flushed write is lost, and writes go on once it is back (nothing to rebuild from: it is taken back as it is)", async (t) => {
    if (!canRun(needs, t.task.name)) return t.skip();
    const cluster = await startCluster("kill");
    const node = (i: number) => cluster.nodes[i] as (typeof cluster.nodes)[number];
    await cluster.client(0).createVolume({ name: "one", sizeBytes: SIZE, replicas: 1, replicated: true });
    const [holder] = await holders(cluster, "one");
    const away = [0, 1, 2].find((i) => i !== holder) as number;
    const c = cluster.client(away);
    await c.attachVolume({ name: "one", replicaTimeoutMs: 1_000 });
    const nbd = await NbdTestClient.open(node(away).nbdAddress, "one");
    expect((await nbd.write(0, stamp(1))).error).toBe(0);
    expect((await nbd.flush()).error).toBe(0);

    await cluster.kill9(holder as number);
    expect((await nbd.write(CHUNK, stamp(2))).error, "a write with the only replica down").not.toBe(0);
    await waitFor("the volume is faulted", async () => (await c.getVolume({ name: "one" })).state === "faulted");

    await cluster.startNode(holder as number);
    await waitFor("the replica serves again", async () => (await c.getAttachment({ name: "one" })).state === "healthy");
    expect(await readsBack(nbd, 0, stamp(1)), "the flushed write").toBe(true);
    expect((await nbd.write(CHUNK, stamp(3))).error, "a write once it is back").toBe(0);
    expect((await nbd.flush()).error).toBe(0);
    expect(await readsBack(nbd, CHUNK, stamp(3))).toBe(true);
    expect((await c.getVolume({ name: "one" })).state).toBe("healthy");
    await nbd.disconnect();
  }, 180_000);
});
