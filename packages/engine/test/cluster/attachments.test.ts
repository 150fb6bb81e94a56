import os from "node:os";
import path from "node:path";
import type { KeelsonClient } from "@keelson/sdk";
import { describe, expect, it } from "vitest";
import { LocalCluster, type StartedLocalCluster } from "../../src/local-cluster/local-cluster.js";
import { ReplicaClient } from "../../src/replication/replica-client.js";
import { writeReplicaAsNode } from "../helpers/as-node.js";
import { trackClusters } from "../helpers/clusters.js";
import { canRun } from "../helpers/env.js";
import { codeOf } from "../helpers/errors.js";
import { NbdTestClient } from "../helpers/nbd-client.js";
import { CHUNK, stamp } from "../helpers/stamps.js";

const MIB = 1024 * 1024;
const SIZE = 64 * MIB;
/** NBD's EPERM: what a write to a read-only export gets. */
const EPERM = 1;

const track = trackClusters();

async function threeNodes(): Promise<StartedLocalCluster> {
  const dir = path.join(os.tmpdir(), `keelson-attach-${process.pid}-${Date.now()}`);
  return track(await LocalCluster.start({ nodes: 3, dir, diskSizeBytes: 256 * MIB, leaseTtlS: 2 }));
}

/** The first id stamped at `offset`, read through the export `name` on `address`. */
async function stampAt(address: string, name: string, offset: number): Promise<bigint> {
  const c = await NbdTestClient.open(address, name);
  try {
    const r = await c.read(offset, CHUNK);
    if (r.error !== 0) throw new Error(`read at ${offset} failed with NBD error ${r.error}`);
    return r.data.readBigUInt64BE(0);
  } finally {
    await c.disconnect();
  }
}

/** Detaches, retrying while the server has not yet seen the test's NBD connection close (bounded). */
async function detach(client: KeelsonClient, name: string, nodeId: string): Promise<void> {
  const deadline = Date.now() + 5_000;
  for (;;) {
    const code = await codeOf(client.detachVolume({ name, nodeId }));
    if (code === "ok") return;
    if (code !== "VOLUME_IN_USE" || Date.now() > deadline) throw new Error(`detach of ${name} on ${nodeId}: ${code}`);
    await new Promise((r) => setTimeout(r, 50));
  }
}

describe("attachments", () => {
  it("one writer at a time, many readers without it: forwarded attach and detach, RWO and ROX refusals, a clean detach leaves nothing to resync, readers refuse writes, typed errors for bad requests", async (t) => {
    if (!canRun({ root: true, tools: ["etcd", "ip", "losetup"] }, t.task.name)) return t.skip();
    const cluster = await threeNodes();
    const [c1, c2, c3] = [cluster.client(0), cluster.client(1), cluster.client(2)];
    const addr = (i: number) => cluster.nodes[i]?.nbdAddress as string;
    await c1.createVolume({ name: "db", sizeBytes: SIZE, replicas: 3 });

    // Attached on node1 through node3's API; attaching again there is idempotent.
    const w = await c3.attachVolume({ name: "db", nodeId: "node1" });
    expect(w).toMatchObject({ nodeId: "node1", epoch: 1, readOnly: false, state: "healthy" });
    expect((await c1.attachVolume({ name: "db" })).epoch).toBe(1);
    expect(await c2.listAttachments({ name: "db" })).toMatchObject([{ nodeId: "node1", readOnly: false, epoch: 1 }]);

    const writer = await NbdTestClient.open(addr(0), "db");
    expect((await writer.write(0, stamp(7))).error).toBe(0);
    expect((await writer.write(20 * MIB, stamp(8))).error).toBe(0);
    // Connected clients keep it attached unless forced.
    expect(await codeOf(c2.detachVolume({ name: "db", nodeId: "node1" }))).toBe("VOLUME_IN_USE");
    // One writer: node2 can neither write nor read beside node1.
    expect(await codeOf(c2.attachVolume({ name: "db" }))).toBe("ATTACHED_ELSEWHERE");
    expect(await codeOf(c2.attachVolume({ name: "db", readOnly: true }))).toBe("ATTACHED_ELSEWHERE");
    await writer.disconnect();
    await detach(c2, "db", "node1");
    expect(await c2.listAttachments({ name: "db" })).toEqual([]);
    expect(await codeOf(NbdTestClient.open(addr(0), "db"))).not.toBe("ok"); // node1 serves it no more

    // Readers on node2 and node3 at the same epoch: nothing fenced, nothing to resync (the detach was clean).
    const r2 = await c2.attachVolume({ name: "db", readOnly: true });
    const r3 = await c1.attachVolume({ name: "db", nodeId: "node3", readOnly: true });
    expect(r2).toMatchObject({ nodeId: "node2", readOnly: true, epoch: 1 });
    expect(r3).toMatchObject({ nodeId: "node3", readOnly: true, epoch: 1 });
    expect([...r2.replicas, ...r3.replicas].every((r) => r.state === "healthy" && r.lastRebuild === undefined)).toBe(true);
    for (const i of [1, 2]) {
      expect(await stampAt(addr(i), "db", 0)).toBe(7n);
      expect(await stampAt(addr(i), "db", 20 * MIB)).toBe(8n);
    }
    const reader = await NbdTestClient.open(addr(1), "db");
    expect((await reader.write(0, stamp(9))).error).toBe(EPERM);
    expect((await reader.read(0, CHUNK)).data.readBigUInt64BE(0)).toBe(7n);
    await reader.disconnect();
    expect((await c3.listAttachments({ name: "db" })).map((a) => `${a.nodeId}:${a.readOnly}`).sort()).toEqual([
      "node2:true",
      "node3:true",
    ]);
    // No writer while readers are attached, not even by takeover.
    expect(await codeOf(c1.attachVolume({ name: "db" }))).toBe("ATTACHED_ELSEWHERE");
    expect(await codeOf(c1.attachVolume({ name: "db", takeover: true }))).toBe("ATTACHED_ELSEWHERE");
    // A node attached read-only cannot switch to writable in place.
    expect(await codeOf(c2.attachVolume({ name: "db" }))).toBe("ATTACHED_ELSEWHERE");
    await detach(c1, "db", "node2");
    await detach(c1, "db", "node3");

    // The writer comes back at a new epoch with every replica healthy at once: nothing to resync.
    const again = await c1.attachVolume({ name: "db" });
    expect(again.epoch).toBe(2);
    expect(again.replicas.every((r) => r.state === "healthy" && r.lastRebuild === undefined)).toBe(true);
    expect(await stampAt(addr(0), "db", 0)).toBe(7n);

    // Bad requests get typed errors; detaching where nothing is attached is a no-op.
    expect(await codeOf(c1.attachVolume({ name: "nope" }))).toBe("VOLUME_NOT_FOUND");
    expect(await codeOf(c1.attachVolume({ name: "" }))).toBe("INVALID_ARGUMENT");
    expect(await codeOf(c1.attachVolume({ name: "db", nodeId: "node9" }))).toBe("NODE_NOT_FOUND");
    expect(await codeOf(c1.detachVolume({ name: "db", nodeId: "node9" }))).toBe("NODE_NOT_FOUND");
    expect(await codeOf(c3.detachVolume({ name: "db" }))).toBe("ok");
    expect(await codeOf(c1.listAttachments({ name: "nope" }))).toBe("VOLUME_NOT_FOUND");
    expect(await codeOf(c1.detachVolume({ name: "" }))).toBe("INVALID_ARGUMENT");
    expect(await codeOf(c1.listAttachments({ name: "" }))).toBe("INVALID_ARGUMENT");
    expect(await codeOf(c1.getAttachment({ name: "db2-not-here" }))).toBe("VOLUME_NOT_FOUND");
    expect(await c2.listAttachments({ name: "db" })).toMatchObject([{ nodeId: "node1", readOnly: false, epoch: 2 }]);

    // SDK helpers: create-and-attach through one node for another, then wait for a state.
    const { volume, attachment } = await c1.createAndAttach({ name: "db2", sizeBytes: 16 * MIB, replicas: 2, nodeId: "node2" });
    expect(volume.replicas).toBe(2);
    expect(attachment).toMatchObject({ volume: "db2", nodeId: "node2", epoch: 1 });
    expect((await c2.waitFor("db2", "healthy", { timeoutMs: 10_000 })).replicas).toHaveLength(2);
    expect(await codeOf(c2.waitFor("db2", "degraded", { timeoutMs: 300, intervalMs: 100 }))).toBe("DEADLINE_EXCEEDED");
  }, 120_000);

  it("writer killed -9 with a write on one replica only: detaching the dead node fences it; a read-only attach then makes the replicas equal before serving, so every reader reads the same", async (t) => {
    if (!canRun({ root: true, tools: ["etcd", "ip", "losetup"] }, t.task.name)) return t.skip();
    const cluster = await threeNodes();
    const [c1, c2] = [cluster.client(0), cluster.client(1)];
    const addr = (i: number) => cluster.nodes[i]?.nbdAddress as string;
    await c1.createVolume({ name: "db", sizeBytes: SIZE, replicas: 3 });
    await c1.attachVolume({ name: "db" });
    const writer = await NbdTestClient.open(addr(0), "db");
    expect((await writer.write(0, stamp(1))).error).toBe(0);
    // As if node1 had sent its next write to node3 only, then died. The same write again keeps the
    // extent in node1's activity log (writing as node1 takes a process start, longer than its idle time).
    await writeReplicaAsNode(cluster, 0, 2, "db#1", CHUNK, stamp(99));
    expect((await writer.write(0, stamp(1))).error).toBe(0);
    writer.close();
    await cluster.kill9(0);

    expect(await codeOf(c2.attachVolume({ name: "db", readOnly: true }))).toBe("ATTACHED_ELSEWHERE");
    await c2.detachVolume({ name: "db", nodeId: "node1" });
    expect(await c2.listAttachments({ name: "db" })).toEqual([]);
    const r2 = await c2.attachVolume({ name: "db", readOnly: true }, { timeoutMs: 60_000 });
    const r3 = await c2.attachVolume({ name: "db", nodeId: "node3", readOnly: true }, { timeoutMs: 60_000 });
    // Epoch 2 fenced node1 at the detach; the resync ran as a writer at epoch 3, then detached cleanly.
    expect(r2.epoch).toBe(3);
    expect(r3.epoch).toBe(3);
    for (const i of [1, 2]) {
      expect(await stampAt(addr(i), "db", 0)).toBe(1n);
      expect(await stampAt(addr(i), "db", CHUNK)).toBe(0n); // node2, the source, never had write 99
    }
    // The replicas themselves are equal.
    const images: Buffer[] = [];
    for (const i of [1, 2]) {
      // Read-only inspection of the node's own replica on its unix socket.
      const c = await ReplicaClient.connect(cluster.nodes[i]?.nbdSocket as string, "db#3", 5_000);
      images.push(await c.read(0, 8 * MIB));
      c.close();
    }
    expect((images[0] as Buffer).equals(images[1] as Buffer)).toBe(true);
  }, 120_000);
});
