import os from "node:os";
import path from "node:path";
import { isKeelsonError } from "@keelson/sdk";
import { describe, expect, it } from "vitest";
import { currentEpoch, nextEpoch } from "../../src/cluster/epochs.js";
import { LocalCluster } from "../../src/local-cluster/local-cluster.js";
import { EtcdMetadataStore, type MetadataStore } from "../../src/metadata/index.js";
import { ReplicaClient } from "../../src/replication/replica-client.js";
import { replicaAddressOf, writeReplicaAsNode } from "../helpers/as-node.js";
import { trackClusters } from "../helpers/clusters.js";
import { canRun } from "../helpers/env.js";
import { NbdTestClient } from "../helpers/nbd-client.js";
import { readAll } from "../helpers/stamps.js";

const MIB = 1024 * 1024;
const EPERM = 1;

const track = trackClusters();

async function code(p: Promise<unknown>): Promise<string> {
  return p.then(
    () => "none",
    (e: unknown) => (isKeelsonError(e) ? e.code : String(e)),
  );
}

describe("epoch fencing", () => {
  it("nobody names their own epoch: an outsider cannot open a replica at any epoch, on the application export or the replica listener; FenceVolume takes only epochs etcd granted; a node that does not hold the epoch only reads; the replicas stay equal", async (t) => {
    if (!canRun({ root: true, tools: ["etcd", "ip", "losetup"] }, t.task.name)) return t.skip();
    const dir = path.join(os.tmpdir(), `keelson-trust-${process.pid}-${Date.now()}`);
    const cluster = track(await LocalCluster.start({ nodes: 3, dir, diskSizeBytes: 256 * MIB, leaseTtlS: 2 }));
    const c1 = cluster.client(0);
    await c1.createVolume({ name: "db", sizeBytes: 16 * MIB, replicas: 3 });
    const { epoch } = await c1.attachVolume({ name: "db" });
    const front = await NbdTestClient.open(cluster.nodes[0]?.nbdAddress as string, "db");
    expect((await front.write(0, Buffer.alloc(MIB, 1))).error).toBe(0);
    expect((await front.flush()).error).toBe(0);
    const node3 = cluster.nodes[2];
    if (!node3) throw new Error("no node3");
    // From the host (no node of the cluster): the application export serves no replica at any epoch.
    // Before the split, db#99 opened node3's replica for writing and fenced the frontend out.
    for (const name of ["db#99", `db#${epoch}`, "db"]) {
      const opened = await NbdTestClient.open(node3.nbdAddress, name).then(
        async (c) => {
          await c.write(MIB, Buffer.alloc(MIB, 0xee));
          c.close();
          return true;
        },
        () => false,
      );
      expect(opened, `${name} on node3's application export`).toBe(false);
    }
    // The replica listener: no node's, at any epoch (refused before anything is looked up for it).
    const replicaAt = replicaAddressOf(cluster, 2);
    expect(await code(ReplicaClient.connect(replicaAt, "db#99", 5_000))).toBe("PERMISSION_DENIED");
    expect(await code(ReplicaClient.connect(replicaAt, `db#${epoch}`, 5_000))).toBe("PERMISSION_DENIED");
    // A node naming an epoch etcd did not grant: stale.
    await expect(writeReplicaAsNode(cluster, 1, 2, "db#99", MIB, Buffer.alloc(MIB, 0xdd))).rejects.toThrow(/EPOCH_STALE/);
    // FenceVolume: an epoch never granted would shut every future writer out.
    expect(await code(cluster.client(2).fenceVolume({ name: "db", epoch: 2 ** 53 - 1 }))).toBe("INVALID_ARGUMENT");
    // Past the next epoch, FenceVolume asks etcd (the next one is taken on trust: see volume-service.ts).
    expect(await code(cluster.client(2).fenceVolume({ name: "db", epoch: epoch + 2 }))).toBe("INVALID_ARGUMENT");
    expect((await cluster.client(2).getVolume({ name: "db", replicaOnly: true })).epoch).toBe(epoch);
    // node2 is a node, but not the one that took the epoch: its write to node3's replica is refused.
    await expect(writeReplicaAsNode(cluster, 1, 2, `db#${epoch}`, MIB, Buffer.alloc(MIB, 0xdd))).rejects.toThrow(
      /EPOCH_STALE|read-only|EPERM/,
    );
    // The frontend was never fenced: it still writes, every replica is healthy, and they are equal.
    expect((await front.write(2 * MIB, Buffer.alloc(MIB, 2))).error).toBe(0);
    expect((await front.flush()).error).toBe(0);
    // Healthy (a replica this loaded machine let time out is rebuilt first: bounded wait, no timing asserted).
    const states = async () => (await c1.getAttachment({ name: "db" })).replicas.map((r) => `${r.nodeId} ${r.state}`);
    const deadline = Date.now() + 60_000;
    while (Date.now() < deadline && (await states()).some((s) => !s.endsWith("healthy")))
      await new Promise((r) => setTimeout(r, 200));
    expect(await states()).toEqual(["node1 healthy", "node2 healthy", "node3 healthy"]);
    front.close();
    const images = await Promise.all(cluster.nodes.map((n) => readAll(n.nbdSocket, `db#${epoch}`, 16 * MIB)));
    for (const image of images) expect(image.equals(images[0] as Buffer)).toBe(true);
    expect(images[0]?.subarray(MIB, 2 * MIB).equals(Buffer.alloc(MIB))).toBe(true);
    // Inspection on the unix socket is read-only.
    const inspect = await NbdTestClient.open(node3.nbdSocket, `db#${epoch}`);
    expect((await inspect.write(0, Buffer.alloc(4096, 9))).error).toBe(EPERM);
    inspect.close();
  }, 180_000);

  it("epochs from etcd: 8 attachers racing get distinct, gap-free epochs", async (t) => {
    if (!canRun({ tools: ["etcd"] }, t.task.name)) return t.skip();
    const dir = path.join(os.tmpdir(), `keelson-epochs-${process.pid}-${Date.now()}`);
    await using cluster = await LocalCluster.start({ nodes: 0, dir, isolation: "loopback" });
    const clients = Array.from({ length: 8 }, () => EtcdMetadataStore.connect(cluster.etcdEndpoint));
    try {
      const got = (await Promise.all(clients.flatMap((c) => [1, 2, 3].map(() => nextEpoch(c, "vol", "racer"))))).sort(
        (a, b) => a - b,
      );
      expect(got).toEqual(Array.from({ length: 24 }, (_, i) => i + 1));
      expect(await currentEpoch(clients[0] as MetadataStore, "vol")).toBe(24);
      expect(await currentEpoch(clients[0] as MetadataStore, "other")).toBe(0);
    } finally {
      for (const c of clients) c.close();
    }
  });
});
