import os from "node:os";
import path from "node:path";
import type { KeelsonClient } from "@keelson/sdk";
import { describe, expect, it } from "vitest";
import { LocalCluster, type StartedLocalCluster } from "../../src/local-cluster/local-cluster.js";
import { EtcdMetadataStore, refs } from "../../src/metadata/index.js";
import { trackClusters } from "../helpers/clusters.js";
import { canRun } from "../helpers/env.js";
import { codeOf } from "../helpers/errors.js";
import { NbdTestClient } from "../helpers/nbd-client.js";
import { run } from "../helpers/process.js";
import { CHUNK, stamp } from "../helpers/stamps.js";

const MIB = 1024 * 1024;
const SIZE = 16 * MIB;
/** Bound on waiting for the leader's repair pass (it runs every 500 ms): a failure bound, not a timing claim. */
const REPAIR_WAIT_MS = 60_000;

const KEELSON = path.resolve(path.dirname(new URL(import.meta.url).pathname), "../../dist/cli/keelson.js");

const track = trackClusters();

/** The `keelson` CLI against the control API at `address`, with --json; its parsed output. */
async function cli(address: string, args: string[]): Promise<{ sizeBytes?: number; freedBytes?: number }> {
  const r = await run(process.execPath, [KEELSON, "--address", address, "--json", ...args], { timeoutMs: 60_000 });
  return JSON.parse(r.stdout) as { sizeBytes?: number; freedBytes?: number };
}

async function startCluster(tag: string): Promise<StartedLocalCluster> {
  const dir = path.join(os.tmpdir(), `keelson-rlife-${tag}-${process.pid}-${Date.now()}`);
  return track(await LocalCluster.start({ nodes: 3, dir, diskSizeBytes: 256 * MIB, leaseTtlS: 2 }));
}

/** Names of the volumes a node lists. */
async function listedNames(c: KeelsonClient): Promise<string[]> {
  return (await c.listVolumes()).map((v) => v.name);
}

/** Whether node `c`'s own pool holds volume `name` (its replica): only a local volume has a uid. */
async function holdsReplica(c: KeelsonClient, name: string): Promise<boolean> {
  try {
    return (await c.getVolume({ name, replicaOnly: true })).uid !== "";
  } catch {
    return false;
  }
}

async function waitFor(what: string, check: () => Promise<boolean>): Promise<void> {
  const deadline = Date.now() + REPAIR_WAIT_MS;
  while (!(await check())) {
    if (Date.now() > deadline) throw new Error(`gave up waiting: ${what}`);
    await new Promise((r) => setTimeout(r, 250));
  }
}

const needs = { root: true, tools: ["etcd", "ip", "losetup"] };

describe("replicated volumes through the control API", () => {
  it("delete: refused while attached; forced, the frontend is fenced (no write acknowledged after) and every replica and record goes; again VOLUME_NOT_FOUND; a replica on a node that is down goes when it returns", async (t) => {
    if (!canRun(needs, t.task.name)) return t.skip();
    const cluster = await startCluster("del");
    const [c1, c2, c3] = [cluster.client(0), cluster.client(1), cluster.client(2)];
    const addr1 = cluster.nodes[0]?.nbdAddress as string;
    await c1.createVolume({ name: "db", sizeBytes: SIZE, replicas: 3 });
    await c1.attachVolume({ name: "db" });
    const nbd = await NbdTestClient.open(addr1, "db");
    expect((await nbd.write(0, stamp(1))).error).toBe(0);

    expect(await codeOf(c2.deleteVolume({ name: "db" }))).toBe("VOLUME_IN_USE");
    for (const c of [c1, c2, c3]) expect(await holdsReplica(c, "db"), "a refused delete keeps every replica").toBe(true);
    expect((await nbd.read(0, CHUNK)).data.equals(stamp(1))).toBe(true);

    await c2.deleteVolume({ name: "db", force: true });
    expect((await nbd.write(CHUNK, stamp(2)).catch(() => ({ error: -1 }))).error, "a write after a forced delete").not.toBe(0);
    nbd.close();
    for (const c of [c1, c2, c3]) {
      expect(await holdsReplica(c, "db"), "every node's copy is deleted, not left for later").toBe(false);
      expect(await codeOf(c.getVolume({ name: "db" }))).toBe("VOLUME_NOT_FOUND");
      expect(await listedNames(c)).not.toContain("db");
    }
    expect(await codeOf(c3.listAttachments({ name: "db" }))).toBe("VOLUME_NOT_FOUND");
    expect(await codeOf(NbdTestClient.open(addr1, "db"))).not.toBe("ok");
    expect(await codeOf(c1.deleteVolume({ name: "db" }))).toBe("VOLUME_NOT_FOUND");
    expect(await codeOf(c3.deleteVolume({ name: "db", force: true }))).toBe("VOLUME_NOT_FOUND");

    // The name is free again: a new volume starts empty.
    await c3.createVolume({ name: "db", sizeBytes: SIZE, replicas: 3 });
    await c3.attachVolume({ name: "db" });
    const fresh = await NbdTestClient.open(cluster.nodes[2]?.nbdAddress as string, "db");
    expect((await fresh.read(0, CHUNK)).data.equals(Buffer.alloc(CHUNK)), "a re-created volume holds none of the old data").toBe(
      true,
    );
    await fresh.disconnect();
    await c3.detachVolume({ name: "db" });

    // node3 is down: its replica is deleted once it is back; a volume of that name made meanwhile is kept.
    await c1.createVolume({ name: "logs", sizeBytes: SIZE, replicas: 3 });
    await cluster.stopNode(2);
    await c1.deleteVolume({ name: "logs" });
    expect(await codeOf(c2.getVolume({ name: "logs" }))).toBe("VOLUME_NOT_FOUND");
    await c1.createVolume({ name: "logs", sizeBytes: SIZE, replicas: 2 });
    await c1.attachVolume({ name: "logs" });
    const logs = await NbdTestClient.open(addr1, "logs");
    expect((await logs.write(0, stamp(7))).error).toBe(0);
    await cluster.startNode(2);
    await waitFor("node3's copy of the deleted logs is removed", async () => !(await holdsReplica(c3, "logs")));
    expect((await logs.read(0, CHUNK)).data.equals(stamp(7)), "the new logs is untouched").toBe(true);
    expect((await c2.getVolume({ name: "logs" })).replicas).toBe(2);
    await logs.disconnect();
  }, 180_000);

  it("a node whose liveness key lapsed but which answers: a delete removes its copy with the delete, not later, and a declaration in sync about its replica goes through", async (t) => {
    if (!canRun(needs, t.task.name)) return t.skip();
    const cluster = await startCluster("lapse");
    const [c1, c3] = [cluster.client(0), cluster.client(2)];
    await c1.createVolume({ name: "db", sizeBytes: SIZE, replicas: 3 });
    await c1.createVolume({ name: "keep", sizeBytes: SIZE, replicas: 3 });
    // A keepalive that came late under load: etcd dropped node3's liveness key, node3 itself runs on.
    const etcd = EtcdMetadataStore.connect(cluster.etcdEndpoint);
    try {
      const alive = await etcd.get(refs.alive("node3"));
      expect(alive, "node3 is alive before").not.toBeNull();
      expect(
        await etcd.commit({ if: [{ ref: refs.alive("node3"), version: alive?.version ?? null }], delete: [refs.alive("node3")] }),
      ).toBe(true);
    } finally {
      etcd.close();
    }
    await c1.deleteVolume({ name: "db" });
    expect(await holdsReplica(c3, "db"), "node3's copy is deleted by the delete itself").toBe(false);
    expect(await codeOf(c3.getVolume({ name: "db" }))).toBe("VOLUME_NOT_FOUND");
    // An operator's declaration about node3's replica asks node3 itself, key or not (CI saw one refused).
    const declared = await c3.declareInSync({ name: "keep", nodeId: "node3", reason: "test: node3's key lapsed" });
    expect(declared.replicas).toBe(3);
  }, 120_000);

  it("a replicated create that fails on one node leaves no replica and no record behind", async (t) => {
    if (!canRun(needs, t.task.name)) return t.skip();
    const cluster = await startCluster("roll");
    const [c1, c2, c3] = [cluster.client(0), cluster.client(1), cluster.client(2)];
    // node3 holds a volume of its own under that name: its replica cannot be made.
    await c3.createVolume({ name: "dup", sizeBytes: SIZE, labels: { owner: "node3" } });
    expect(await codeOf(c1.createVolume({ name: "dup", sizeBytes: SIZE, replicas: 3 }))).toBe("ALREADY_EXISTS");
    expect(await holdsReplica(c1, "dup"), "node1's replica rolled back").toBe(false);
    expect(await holdsReplica(c2, "dup"), "node2's replica rolled back").toBe(false);
    expect((await c3.getVolume({ name: "dup" })).labels.owner, "node3's own volume is kept").toBe("node3");
    expect(await codeOf(c1.listAttachments({ name: "dup" })), "no record").toBe("VOLUME_NOT_FOUND");
    // Once the obstacle is gone, the same create succeeds.
    await c3.deleteVolume({ name: "dup" });
    expect((await c1.createVolume({ name: "dup", sizeBytes: SIZE, replicas: 3 })).replicas).toBe(3);
  }, 120_000);

  it("resize: every replica grows online while attached (a new connection sees the size and its data reaches the replicas); shrink refused; refused UNAVAILABLE while a replica's node is down", async (t) => {
    if (!canRun(needs, t.task.name)) return t.skip();
    const cluster = await startCluster("grow");
    const [c1, c2, c3] = [cluster.client(0), cluster.client(1), cluster.client(2)];
    const addr = (i: number) => cluster.nodes[i]?.nbdAddress as string;
    await c1.createVolume({ name: "grow", sizeBytes: SIZE, replicas: 3 });
    await c1.attachVolume({ name: "grow" });
    const before = await NbdTestClient.open(addr(0), "grow");
    expect(before.sizeBytes).toBe(SIZE);
    expect((await before.write(0, stamp(1))).error).toBe(0);

    expect((await c2.resizeVolume({ name: "grow", sizeBytes: 2 * SIZE })).sizeBytes).toBe(2 * SIZE);
    for (const c of [c1, c2, c3]) expect((await c.getVolume({ name: "grow" })).sizeBytes).toBe(2 * SIZE);
    const after = await NbdTestClient.open(addr(0), "grow");
    expect(after.sizeBytes).toBe(2 * SIZE);
    expect((await after.write(SIZE + CHUNK, stamp(2))).error, "a write beyond the old end").toBe(0);
    expect((await after.read(SIZE + CHUNK, CHUNK)).data.equals(stamp(2))).toBe(true);
    expect((await after.read(0, CHUNK)).data.equals(stamp(1))).toBe(true);
    expect((await before.write(CHUNK, stamp(3))).error, "the old connection still writes").toBe(0);
    await after.disconnect();
    await before.disconnect();
    expect((await c3.resizeVolume({ name: "grow", sizeBytes: 2 * SIZE })).sizeBytes, "idempotent").toBe(2 * SIZE);
    expect(await codeOf(c3.resizeVolume({ name: "grow", sizeBytes: SIZE }))).toBe("SHRINK_NOT_SUPPORTED");

    // Served by another node's replica: the write beyond the old end is there.
    await c1.detachVolume({ name: "grow" });
    await c2.attachVolume({ name: "grow" });
    const on2 = await NbdTestClient.open(addr(1), "grow");
    expect(on2.sizeBytes).toBe(2 * SIZE);
    expect((await on2.read(SIZE + CHUNK, CHUNK)).data.equals(stamp(2))).toBe(true);
    await on2.disconnect();

    // The CLI, through a node that is not the writer's.
    const grpc = (i: number) => cluster.nodes[i]?.grpcAddress as string;
    expect((await cli(grpc(2), ["volume", "resize", "grow", "--size", `${(3 * SIZE) / MIB}M`])).sizeBytes).toBe(3 * SIZE);
    for (const c of [c1, c2, c3]) expect((await c.getVolume({ name: "grow" })).sizeBytes).toBe(3 * SIZE);

    await cluster.stopNode(2);
    expect(await codeOf(c1.resizeVolume({ name: "grow", sizeBytes: 4 * SIZE }))).toBe("UNAVAILABLE");
    expect((await c1.getVolume({ name: "grow" })).sizeBytes, "nothing recorded").toBe(3 * SIZE);
    await cli(grpc(0), ["volume", "delete", "grow", "--force"]);
    expect(await codeOf(c2.getVolume({ name: "grow" }))).toBe("VOLUME_NOT_FOUND");
  }, 180_000);

  it("Volume.state and allocatedBytes of a replicated volume: the replicas' allocation, and degraded once a replica is faulted, on every node", async (t) => {
    if (!canRun(needs, t.task.name)) return t.skip();
    const cluster = await startCluster("state");
    const [c1, c2] = [cluster.client(0), cluster.client(1)];
    await c1.createVolume({ name: "st", sizeBytes: SIZE, replicas: 3 });
    expect((await c2.getVolume({ name: "st" })).state).toBe("healthy");
    await c1.attachVolume({ name: "st" });
    const nbd = await NbdTestClient.open(cluster.nodes[0]?.nbdAddress as string, "st");
    for (let at = 0; at < 4 * MIB; at += CHUNK) expect((await nbd.write(at, stamp(at + 1))).error).toBe(0);
    expect((await nbd.flush()).error).toBe(0);
    for (const c of [c1, c2]) expect((await c.getVolume({ name: "st" })).allocatedBytes).toBeGreaterThanOrEqual(4 * MIB);
    const listed = (await c2.listVolumes()).find((v) => v.name === "st");
    expect(listed?.allocatedBytes).toBeGreaterThanOrEqual(4 * MIB);

    await cluster.kill9(2);
    expect((await nbd.write(0, stamp(9))).error, "written degraded").toBe(0);
    await waitFor("node2 sees st degraded", async () => (await c2.getVolume({ name: "st" })).state === "degraded");
    expect((await c2.listVolumes()).find((v) => v.name === "st")?.state).toBe("degraded");
    expect((await c1.getVolume({ name: "st" })).state).toBe("degraded");
    await nbd.disconnect();
  }, 120_000);

  it("clone of a replicated snapshot and of a replicated volume (attached, at one point in time): every replica starts equal and in sync, holds the source's data, and takes writes apart from the source", async (t) => {
    if (!canRun(needs, t.task.name)) return t.skip();
    const cluster = await startCluster("clone");
    const [c1, c2, c3] = [cluster.client(0), cluster.client(1), cluster.client(2)];
    const addr = (i: number) => cluster.nodes[i]?.nbdAddress as string;
    await c1.createVolume({ name: "src", sizeBytes: SIZE, replicas: 3 });
    await c1.attachVolume({ name: "src" });
    const src = await NbdTestClient.open(addr(0), "src");
    expect((await src.write(0, stamp(1))).error).toBe(0);
    await c2.createSnapshot({ volume: "src", name: "s1" });
    expect((await src.write(0, stamp(2))).error).toBe(0);

    const fromSnap = await c3.createVolume({
      name: "c-snap",
      sizeBytes: 0,
      replicas: 3,
      source: { snapshot: { volume: "src", name: "s1" } },
    });
    expect([fromSnap.sizeBytes, fromSnap.replicas]).toEqual([SIZE, 3]);
    const fromVol = await c2.createVolume({ name: "c-vol", sizeBytes: 2 * SIZE, replicas: 2, source: { volume: "src" } });
    expect([fromVol.sizeBytes, fromVol.replicas]).toEqual([2 * SIZE, 2]);
    expect(
      (await c1.listSnapshots({ volume: "src" })).map((s) => s.name),
      "the clone's own snapshot is gone",
    ).toEqual(["s1"]);
    expect(await codeOf(c1.createVolume({ name: "c-4", sizeBytes: 0, replicas: 4, source: { volume: "src" } }))).toBe(
      "INVALID_ARGUMENT",
    );

    // Each clone read through two different nodes' frontends (each reads its local replica first).
    for (const [clone, want] of [
      ["c-snap", stamp(1)],
      ["c-vol", stamp(2)],
    ] as const) {
      for (const node of [1, 2]) {
        await cluster.client(node).attachVolume({ name: clone });
        const c = await NbdTestClient.open(addr(node), clone);
        expect((await c.read(0, CHUNK)).data.equals(want), `${clone} on node${node + 1}`).toBe(true);
        await c.disconnect();
        await cluster.client(node).detachVolume({ name: clone });
      }
    }
    await c3.attachVolume({ name: "c-vol" });
    const clone = await NbdTestClient.open(addr(2), "c-vol");
    expect((await clone.write(0, stamp(5))).error).toBe(0);
    await clone.disconnect();
    expect((await src.read(0, CHUNK)).data.equals(stamp(2)), "the source does not see the clone's write").toBe(true);
    await src.disconnect();
    expect((await c1.getVolume({ name: "c-vol" })).state).toBe("healthy");
    for (const name of ["c-vol", "c-snap", "src"]) await c2.deleteVolume({ name, force: true });
  }, 180_000);
});
