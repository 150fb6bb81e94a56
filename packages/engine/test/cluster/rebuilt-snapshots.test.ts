import os from "node:os";
import path from "node:path";
import type { Attachment, KeelsonClient } from "@keelson/sdk";
import { describe, expect, it } from "vitest";
import { LocalCluster } from "../../src/local-cluster/local-cluster.js";
import { trackClusters } from "../helpers/clusters.js";
import { canRun } from "../helpers/env.js";
import { codeOf } from "../helpers/errors.js";
import { NbdTestClient } from "../helpers/nbd-client.js";
import { CHUNK, readAll as readAllOf, stamp } from "../helpers/stamps.js";

const MIB = 1024 * 1024;
const SIZE = 16 * MIB;
const CHUNKS = SIZE / CHUNK;

function readAll(address: string, name: string): Promise<Buffer> {
  return readAllOf(address, name, SIZE);
}

async function waitForAttachment(c: KeelsonClient, ok: (a: Attachment) => boolean, timeoutMs: number): Promise<Attachment> {
  const deadline = Date.now() + timeoutMs;
  let last: Attachment | null = null;
  while (Date.now() < deadline) {
    last = await c.getAttachment({ name: "db" });
    if (ok(last)) return last;
    await new Promise((r) => setTimeout(r, 100));
  }
  throw new Error(`attachment not as expected in ${timeoutMs} ms: ${JSON.stringify(last?.replicas)}`);
}

/** Writes `ids[i]` stamped into chunk `chunks[i]` of the model and the volume (0: trims it). */
async function writeChunks(c: NbdTestClient, model: Buffer, writes: [chunk: number, id: number][]): Promise<void> {
  for (const [chunk, id] of writes) {
    const at = chunk * CHUNK;
    const r = id === 0 ? await c.trim(at, CHUNK) : await c.write(at, stamp(id));
    if (r.error !== 0) throw new Error(`write of chunk ${chunk} failed with NBD error ${r.error}`);
    (id === 0 ? Buffer.alloc(CHUNK) : stamp(id)).copy(model, at);
  }
}

const track = trackClusters();

describe("snapshots of a rebuilt replica", () => {
  it("replica lost and placed on a spare node: the rebuild copies every snapshot (oldest first, only what changed) before the head, so the new replica serves each with the right data and is recorded as its holder; a snapshot taken while the node is down or while it rebuilds reaches it too; a clone needs as many holders as replicas", async (t) => {
    if (!canRun({ root: true, tools: ["etcd", "ip", "losetup"] }, t.task.name)) return t.skip();
    const dir = path.join(os.tmpdir(), `keelson-rebuilt-snaps-${process.pid}-${Date.now()}`);
    const cluster = track(
      await LocalCluster.start({
        nodes: 4,
        dir,
        diskSizeBytes: 256 * MIB,
        leaseTtlS: 2,
        // Slow enough that a snapshot can be taken while the head is copied.
        keelsondArgs: ["--replace-replica-after", "2", "--rebuild-rate", "4M"],
      }),
    );
    const leaderId = (await cluster.client(0).listNodes()).find((n) => n.leader)?.nodeId;
    const front = cluster.nodes.findIndex((n) => n.nodeId !== leaderId);
    const fc = cluster.client(front);
    const addrOf = (nodeId: string) => cluster.nodes.find((n) => n.nodeId === nodeId)?.nbdAddress as string;
    const frontAddr = cluster.nodes[front]?.nbdAddress as string;
    await fc.createVolume({ name: "db", sizeBytes: SIZE, replicas: 3 });
    const att = await fc.attachVolume({ name: "db", replicaTimeoutMs: 1000 });
    const holders0 = att.replicas.map((r) => r.nodeId);
    // A replica away from the frontend and the leader: its node is killed and the leader places it elsewhere.
    const victim = holders0.find((id) => id !== cluster.nodes[front]?.nodeId && id !== leaderId) as string;
    const spare = cluster.nodes.map((n) => n.nodeId).find((id) => !holders0.includes(id)) as string;

    const model = Buffer.alloc(SIZE);
    const expected = new Map<string, Buffer>();
    const c = await NbdTestClient.open(frontAddr, "db");
    // s1: the first half written. s2: some overwritten, some trimmed, some new.
    await writeChunks(
      c,
      model,
      Array.from({ length: CHUNKS / 2 }, (_, i) => [i, 1000 + i]),
    );
    await fc.createSnapshot({ volume: "db", name: "s1" });
    expected.set("s1", Buffer.from(model));
    await writeChunks(c, model, [
      [3, 2003],
      [4, 0],
      [CHUNKS / 2 + 5, 2005],
      [CHUNKS - 1, 2099],
    ]);
    await fc.createSnapshot({ volume: "db", name: "s2" });
    expected.set("s2", Buffer.from(model));

    const victimIndex = cluster.nodes.findIndex((n) => n.nodeId === victim);
    await cluster.kill9(victimIndex);
    // Written while it is down; then a snapshot it misses.
    await writeChunks(c, model, [
      [1, 3001],
      [CHUNKS / 2 + 6, 3006],
    ]);
    const down = await fc.createSnapshot({ volume: "db", name: "s-down" });
    expect([...down.holders].sort()).toEqual(holders0.filter((id) => id !== victim).sort());
    expected.set("s-down", Buffer.from(model));
    // Fewer holders than replicas asked for: refused with a clear error, nothing created.
    expect(
      await codeOf(
        fc.createVolume({ name: "too-many", sizeBytes: 0, replicas: 3, source: { snapshot: { volume: "db", name: "s-down" } } }),
      ),
    ).toBe("INVALID_ARGUMENT");
    await writeChunks(c, model, [[7, 4007]]);

    // The leader places the replica on the spare node; once the frontend copies to it, a snapshot is taken mid-rebuild.
    await waitForAttachment(fc, (a) => a.replicas.some((r) => r.nodeId === spare), 30_000);
    await writeChunks(c, model, [[8, 5008]]);
    const during = await fc.createSnapshot({ volume: "db", name: "s-during" });
    expected.set("s-during", Buffer.from(model));
    const rebuildingThen = !during.holders.includes(spare);
    await writeChunks(c, model, [[9, 6009]]);

    const healed = await waitForAttachment(
      fc,
      (a) =>
        a.replicas.length === 3 && a.replicas.every((r) => r.state === "healthy") && a.replicas.some((r) => r.nodeId === spare),
      90_000,
    );
    const placed = healed.replicas.find((r) => r.nodeId === spare);
    console.log(
      `replica ${victim} placed on ${spare}: rebuilt ${((placed?.lastRebuild?.bytes ?? 0) / MIB).toFixed(1)} MiB in ${placed?.lastRebuild?.durationMs} ms (full: ${placed?.lastRebuild?.full}); s-during taken while it ${rebuildingThen ? "was rebuilding" : "was already healthy"}`,
    );

    // Every snapshot, read from the rebuilt replica's own node, holds exactly its point in time; etcd names it a holder.
    const holders = healed.replicas.map((r) => r.nodeId).sort();
    for (const [name, image] of expected) {
      const got = await readAll(addrOf(spare), `db@${name}`);
      expect(got.equals(image), `${spare}'s db@${name} holds the snapshot's data`).toBe(true);
      expect([...(await fc.getSnapshot({ volume: "db", name })).holders].sort(), `holders of ${name}`).toEqual(holders);
    }
    expect((await readAll(addrOf(spare), "db@s2")).equals(await readAll(frontAddr, "db@s2"))).toBe(true);
    await c.disconnect();
    expect((await readAll(frontAddr, "db")).equals(model), "the volume's head").toBe(true);

    // Clones of a snapshot go on its holders only: with the rebuilt one, three now hold s-down.
    const clone = await fc.createVolume({
      name: "db-clone",
      sizeBytes: 0,
      replicas: 3,
      source: { snapshot: { volume: "db", name: "s-down" } },
    });
    expect(clone.name).toBe("db-clone");
    const cloneAtt = await cluster.client(cluster.nodes.findIndex((n) => n.nodeId === spare)).attachVolume({ name: "db-clone" });
    expect(cloneAtt.replicas.map((r) => r.nodeId).sort()).toEqual(holders);
    expect((await readAll(addrOf(spare), "db-clone")).equals(expected.get("s-down") as Buffer), "the clone's data").toBe(true);
  }, 180_000);

  it("replica's node killed and back: only the snapshots taken while it was down are copied to it (the ones it holds stay as they are), each with the right data, and it is their holder again", async (t) => {
    if (!canRun({ root: true, tools: ["etcd", "ip", "losetup"] }, t.task.name)) return t.skip();
    const dir = path.join(os.tmpdir(), `keelson-returning-snaps-${process.pid}-${Date.now()}`);
    const cluster = track(await LocalCluster.start({ nodes: 3, dir, diskSizeBytes: 256 * MIB, leaseTtlS: 2 }));
    const c1 = cluster.client(0);
    const addr = (i: number) => cluster.nodes[i]?.nbdAddress as string;
    await c1.createVolume({ name: "db", sizeBytes: SIZE, replicas: 3 });
    await c1.attachVolume({ name: "db", replicaTimeoutMs: 1000 });
    const model = Buffer.alloc(SIZE);
    const expected = new Map<string, Buffer>();
    const c = await NbdTestClient.open(addr(0), "db");
    await writeChunks(
      c,
      model,
      Array.from({ length: 32 }, (_, i) => [i, 100 + i]),
    );
    await c1.createSnapshot({ volume: "db", name: "s1" });
    expected.set("s1", Buffer.from(model));
    const s1Uid = (await cluster.client(2).getSnapshot({ volume: "db", name: "s1" })).uid;

    await cluster.kill9(2);
    await writeChunks(c, model, [
      [2, 202],
      [40, 240],
      [5, 0],
    ]);
    await c1.createSnapshot({ volume: "db", name: "s2" });
    expected.set("s2", Buffer.from(model));
    await writeChunks(c, model, [
      [41, 341],
      [2, 302],
    ]);
    await c1.createSnapshot({ volume: "db", name: "s3" });
    expected.set("s3", Buffer.from(model));
    await writeChunks(c, model, [[42, 442]]);

    await cluster.startNode(2);
    const healed = await waitForAttachment(
      c1,
      (a) => a.replicas.every((r) => r.state === "healthy") && a.replicas.some((r) => r.nodeId === "node3" && r.lastRebuild),
      60_000,
    );
    const node3 = healed.replicas.find((r) => r.nodeId === "node3");
    console.log(
      `node3 back: head rebuilt ${((node3?.lastRebuild?.bytes ?? 0) / MIB).toFixed(2)} MiB (full: ${node3?.lastRebuild?.full}) after s2 and s3 were copied to it`,
    );
    const c3 = cluster.client(2);
    expect((await c3.getSnapshot({ volume: "db", name: "s1" })).uid, "node3's own s1 is kept, not copied again").toBe(s1Uid);
    for (const [name, image] of expected) {
      expect((await readAll(addr(2), `db@${name}`)).equals(image), `node3's db@${name}`).toBe(true);
      expect([...(await c1.getSnapshot({ volume: "db", name })).holders].sort(), `holders of ${name}`).toEqual([
        "node1",
        "node2",
        "node3",
      ]);
    }
    // Its head rebuild covered only what changed above s3, not the whole volume.
    expect(node3?.lastRebuild?.bytes ?? SIZE).toBeLessThan(SIZE / 4);
    // Its head too: attached on node3, reads go to node3's own replica.
    await c.disconnect();
    await c1.detachVolume({ name: "db" });
    await c3.attachVolume({ name: "db" });
    expect((await readAll(addr(2), "db")).equals(model), "node3's head").toBe(true);
  }, 120_000);
});
