// Partitions that leave etcd reachable: the frontend's node loses its peers
// (routes to them blackholed inside its namespace) but still reaches etcd and
// its clients. An unreachable replica is not out of sync, a refused takeover
// changes nothing, the in-sync set is never emptied, and the write quorum
// keeps a write from resting on one node alone.
import os from "node:os";
import path from "node:path";
import type { Attachment, KeelsonClient, VolumeChangedEvent } from "@keelson/sdk";
import { describe, expect, it } from "vitest";
import { LocalCluster, type StartedLocalCluster } from "../../src/local-cluster/local-cluster.js";
import { trackClusters } from "../helpers/clusters.js";
import { canRun } from "../helpers/env.js";
import { NbdTestClient } from "../helpers/nbd-client.js";
import { run } from "../helpers/process.js";
import { readAll } from "../helpers/stamps.js";

const MIB = 1024 * 1024;
const SIZE = 16 * MIB;
const BLOCK = 4096;

const track = trackClusters();

async function threeNodes(): Promise<StartedLocalCluster> {
  const dir = path.join(os.tmpdir(), `keelson-partial-${process.pid}-${Date.now()}`);
  return track(await LocalCluster.start({ nodes: 3, dir, diskSizeBytes: 256 * MIB }));
}

/** Blackholes (or restores) the routes from node `from` to each node in `to`, inside `from`'s namespace. */
async function cut(cluster: StartedLocalCluster, from: number, to: number[], on: boolean): Promise<void> {
  const ns = cluster.state.nodes[from]?.netns as string;
  for (const i of to) {
    const address = cluster.state.nodes[i]?.address as string;
    await run("ip", ["netns", "exec", ns, "ip", "route", on ? "add" : "del", "blackhole", `${address}/32`]);
  }
}

/** Writes `fill` at block `block` and flushes, through node `index`'s export; the NBD errno of each (0 is success). */
async function writeAndFlush(cluster: StartedLocalCluster, index: number, block: number, fill: number): Promise<number[]> {
  const c = await NbdTestClient.open(cluster.nodes[index]?.nbdAddress as string, "db");
  try {
    const w = await c.write(block * BLOCK, Buffer.alloc(BLOCK, fill));
    const f = await c.flush();
    return [w.error, f.error];
  } finally {
    c.close();
  }
}

async function blockOn(cluster: StartedLocalCluster, index: number, exportName: string, block: number): Promise<number> {
  const image = await readAll(cluster.nodes[index]?.nbdAddress as string, exportName, SIZE);
  return image[block * BLOCK] as number;
}

async function waitFor(client: KeelsonClient, ok: (a: Attachment) => boolean, what: string): Promise<Attachment> {
  const deadline = Date.now() + 60_000;
  let last: Attachment | null = null;
  while (Date.now() < deadline) {
    last = await client.getAttachment({ name: "db" }).catch(() => null);
    if (last && ok(last)) return last;
    await new Promise((r) => setTimeout(r, 200));
  }
  throw new Error(`${what} not reached in 60 s: ${JSON.stringify(last)}`);
}

const healthy = (a: Attachment) => a.state === "healthy" && a.replicas.every((r) => r.state === "healthy");

async function expectReplicasEqual(cluster: StartedLocalCluster, epoch: number): Promise<void> {
  const images = await Promise.all(cluster.nodes.map((n) => readAll(n.nbdSocket, `db#${epoch}`, SIZE)));
  for (const [k, image] of images.entries()) expect(image.equals(images[0] as Buffer), `node${k + 1}'s replica`).toBe(true);
}

describe("partitions that leave etcd reachable", () => {
  it("minInSync 1, the frontend cut from both replicas: it alone holds the newest write; a takeover elsewhere is refused and changes nothing; once the routes return, it serves on and the others are rebuilt from it", async (t) => {
    if (!canRun({ root: true, tools: ["etcd", "ip", "losetup"] }, t.task.name)) return t.skip();
    const cluster = await threeNodes();
    const n1 = cluster.client(0);
    await n1.createVolume({ name: "db", sizeBytes: SIZE, replicas: 3, minInSync: 1 });
    await n1.attachVolume({ name: "db", replicaTimeoutMs: 1000 });
    expect(await writeAndFlush(cluster, 0, 0, 1)).toEqual([0, 0]);
    await cut(cluster, 0, [1, 2], true);
    // Acknowledged by node1 alone, as minInSync 1 allows: node2 and node3 missed it.
    expect(await writeAndFlush(cluster, 0, 1, 2)).toEqual([0, 0]);
    const before = await n1.getAttachment({ name: "db" });
    expect(before.replicas.map((r) => [r.nodeId, r.state])).toEqual([
      ["node1", "healthy"],
      ["node2", "faulted"],
      ["node3", "faulted"],
    ]);
    const takeover = await cluster
      .client(1)
      .attachVolume({ name: "db", nodeId: "node2", takeover: true })
      .catch((e: unknown) => e);
    expect(takeover).toMatchObject({ code: "UNAVAILABLE", message: expect.stringContaining("no in-sync replica answers") });
    // Nothing changed: same epoch, node1 still serving and still writing.
    const after = await n1.getAttachment({ name: "db" });
    expect(after.epoch).toBe(before.epoch);
    expect(after.nodeId).toBe("node1");
    expect(await writeAndFlush(cluster, 0, 2, 3)).toEqual([0, 0]);
    await cut(cluster, 0, [1, 2], false);
    const healed = await waitFor(n1, healthy, "every replica rebuilt from node1");
    expect(healed.epoch).toBe(before.epoch);
    for (const [block, fill] of [
      [0, 1],
      [1, 2],
      [2, 3],
    ] as const) {
      expect(await blockOn(cluster, 0, "db", block)).toBe(fill);
    }
    await expectReplicasEqual(cluster, healed.epoch);
  }, 180_000);

  it("default quorum (2 of 3), the frontend cut from both replicas: nothing is acknowledged by node1 alone; a takeover on node2 serves every acknowledged write; node1 is rebuilt once back", async (t) => {
    if (!canRun({ root: true, tools: ["etcd", "ip", "losetup"] }, t.task.name)) return t.skip();
    const cluster = await threeNodes();
    const n1 = cluster.client(0);
    await n1.createVolume({ name: "db", sizeBytes: SIZE, replicas: 3 });
    await n1.attachVolume({ name: "db", replicaTimeoutMs: 1000 });
    expect(await writeAndFlush(cluster, 0, 0, 1)).toEqual([0, 0]);
    await cut(cluster, 0, [1, 2], true);
    const [alone] = await writeAndFlush(cluster, 0, 1, 2);
    expect(alone, "a write held by node1 alone is not acknowledged").not.toBe(0);
    const n2 = cluster.client(1);
    const moved = await n2.attachVolume({ name: "db", nodeId: "node2", takeover: true, replicaTimeoutMs: 1000 });
    expect(moved.nodeId).toBe("node2");
    expect(await blockOn(cluster, 1, "db", 0)).toBe(1);
    expect(await writeAndFlush(cluster, 1, 3, 4)).toEqual([0, 0]);
    // The old frontend acknowledges nothing more.
    const [old] = await writeAndFlush(cluster, 0, 4, 5);
    expect(old).not.toBe(0);
    await cut(cluster, 0, [1, 2], false);
    const healed = await waitFor(n2, healthy, "node1 rebuilt from node2");
    expect(await blockOn(cluster, 1, "db", 3)).toBe(4);
    expect(await blockOn(cluster, 1, "db", 4)).toBe(0);
    await expectReplicasEqual(cluster, healed.epoch);
  }, 180_000);

  it("the frontend cut from one replica: writes go on with two, the cut one is rebuilt after the heal, and all three are equal", async (t) => {
    if (!canRun({ root: true, tools: ["etcd", "ip", "losetup"] }, t.task.name)) return t.skip();
    const cluster = await threeNodes();
    const n1 = cluster.client(0);
    await n1.createVolume({ name: "db", sizeBytes: SIZE, replicas: 3 });
    await n1.attachVolume({ name: "db", replicaTimeoutMs: 1000 });
    await cut(cluster, 0, [2], true);
    for (let b = 0; b < 8; b++) expect(await writeAndFlush(cluster, 0, b, b + 1)).toEqual([0, 0]);
    const degraded = await n1.getAttachment({ name: "db" });
    expect(degraded.replicas.find((r) => r.nodeId === "node3")?.state).toBe("faulted");
    await cut(cluster, 0, [2], false);
    const healed = await waitFor(n1, healthy, "node3 rebuilt");
    await expectReplicasEqual(cluster, healed.epoch);
  }, 180_000);

  it("disaster, the only in-sync replica lost for good: attaches are refused until the operator declares a survivor in sync (recorded, seen by watchers); then it serves, and the third replica is rebuilt from it", async (t) => {
    if (!canRun({ root: true, tools: ["etcd", "ip", "losetup"] }, t.task.name)) return t.skip();
    const cluster = await threeNodes();
    const n1 = cluster.client(0);
    const n2 = cluster.client(1);
    await n1.createVolume({ name: "db", sizeBytes: SIZE, replicas: 3, minInSync: 1 });
    await n1.attachVolume({ name: "db", replicaTimeoutMs: 1000 });
    expect(await writeAndFlush(cluster, 0, 0, 1)).toEqual([0, 0]);
    await cut(cluster, 0, [1, 2], true);
    expect(await writeAndFlush(cluster, 0, 1, 2)).toEqual([0, 0]);
    // node1, the only replica in sync now, is lost for good, its kernel too: a socket that
    // outlived kill -9 alone would deliver the queued write once the routes return (CI saw it).
    await cluster.powerOff(0);
    expect(await cluster.connectionsOf(0), "node1's connections after the power cut").toEqual([]);
    await cut(cluster, 0, [1, 2], false);
    const refused = await n2.attachVolume({ name: "db", nodeId: "node2", takeover: true }).catch((e: unknown) => e);
    expect(refused).toMatchObject({ code: "UNAVAILABLE" });
    // Not while attached: the dead node's attachment goes first.
    expect(
      await n2.declareInSync({ name: "db", nodeId: "node2", reason: "node1's disk lost" }).catch((e: unknown) => e),
    ).toMatchObject({
      code: "VOLUME_IN_USE",
    });
    await n2.detachVolume({ name: "db", nodeId: "node1", force: true }, { timeoutMs: 30_000 });
    expect(await n2.declareInSync({ name: "db", nodeId: "node9", reason: "x" }).catch((e: unknown) => e)).toMatchObject({
      code: "INVALID_ARGUMENT",
    });
    expect(await n2.declareInSync({ name: "db", nodeId: "node2", reason: " " }).catch((e: unknown) => e)).toMatchObject({
      code: "INVALID_ARGUMENT",
    });
    const ac = new AbortController();
    const seen: VolumeChangedEvent[] = [];
    // From the start of the history: a watch opened "from now" is live only some time after the
    // call, so it could miss the declaration (the only one: the two above were refused).
    const watching = (async () => {
      for await (const e of n2.watch({ volume: "db", after: { revision: 1, index: 0 }, signal: ac.signal })) {
        if (e.kind === "volume" && e.declared) {
          seen.push(e);
          ac.abort();
        }
      }
    })().catch(() => undefined);
    await n2.declareInSync({ name: "db", nodeId: "node2", reason: "node1's disk lost" });
    await Promise.race([watching, new Promise((r) => setTimeout(r, 10_000))]);
    ac.abort();
    expect(seen[0]).toMatchObject({ inSync: ["node2"], declared: { nodeId: "node2", reason: "node1's disk lost" } });
    const att = await n2.attachVolume({ name: "db", nodeId: "node2", replicaTimeoutMs: 1000 });
    expect(att.nodeId).toBe("node2");
    // What node2 holds is the volume now: block 0 (acknowledged to all), not node1's last write.
    expect(await blockOn(cluster, 1, "db", 0)).toBe(1);
    expect(await blockOn(cluster, 1, "db", 1)).toBe(0);
    expect(await writeAndFlush(cluster, 1, 2, 3)).toEqual([0, 0]);
    const healed = await waitFor(n2, (a) => a.replicas.find((r) => r.nodeId === "node3")?.state === "healthy", "node3 rebuilt");
    const images = await Promise.all(
      [1, 2].map((i) => readAll(cluster.nodes[i]?.nbdSocket as string, `db#${healed.epoch}`, SIZE)),
    );
    expect((images[0] as Buffer).equals(images[1] as Buffer), "node2's and node3's replicas").toBe(true);
  }, 180_000);

  it("a reader's node cut from one replica for a moment as it attaches: the read-only attach opens again and gets all three replicas, not a replica faulted for the whole attachment", async (t) => {
    if (!canRun({ root: true, tools: ["etcd", "ip", "losetup"] }, t.task.name)) return t.skip();
    const cluster = await threeNodes();
    const c1 = cluster.client(0);
    await c1.createVolume({ name: "db", sizeBytes: SIZE, replicas: 3 });
    await c1.attachVolume({ name: "db" });
    const writer = await NbdTestClient.open(cluster.nodes[0]?.nbdAddress as string, "db");
    expect((await writer.write(BLOCK, Buffer.alloc(BLOCK, 7))).error).toBe(0);
    expect((await writer.flush()).error).toBe(0);
    await writer.disconnect();
    await c1.detachVolume({ name: "db" });
    // node2 cannot reach node3 as its read-only attach begins (a replica node that answers late: one
    // just restarted, or a lost packet); the route returns 600 ms later, well inside the attach.
    await cut(cluster, 1, [2], true);
    const attaching = cluster.client(1).attachVolume({ name: "db", readOnly: true });
    await new Promise((r) => setTimeout(r, 600));
    await cut(cluster, 1, [2], false);
    const reader = await attaching;
    expect(reader.replicas.filter((r) => r.state !== "healthy")).toEqual([]);
    expect(await blockOn(cluster, 1, "db", 1)).toBe(7);
  }, 120_000);
});
