import { execFileSync } from "node:child_process";
import fs from "node:fs";
import os from "node:os";
import path from "node:path";
import { type ClusterNode, isKeelsonError, type KeelsonClient } from "@keelson/sdk";
import { describe, expect, it } from "vitest";
import { LocalCluster, type StartedLocalCluster } from "../../src/local-cluster/local-cluster.js";
import { exited, stopProcess } from "../../src/local-cluster/local-process.js";
import { canRun } from "../helpers/env.js";

const WAIT_MS = 20_000;

/** Polls `client.listNodes()` until `ok` holds; returns the nodes and how long it took. */
async function waitForNodes(
  client: KeelsonClient,
  ok: (nodes: ClusterNode[]) => boolean,
): Promise<{ nodes: ClusterNode[]; ms: number }> {
  const started = Date.now();
  let last: ClusterNode[] = [];
  while (Date.now() - started < WAIT_MS) {
    last = await client.listNodes().catch(() => last);
    if (ok(last)) return { nodes: last, ms: Date.now() - started };
    await new Promise((r) => setTimeout(r, 100));
  }
  throw new Error(`cluster did not reach the expected state in ${WAIT_MS} ms: ${JSON.stringify(last)}`);
}

/** What a cluster leaves behind on the host: its namespaces, bridge, loop devices and processes. */
function leftovers(c: StartedLocalCluster): string[] {
  const out: string[] = [];
  const netns = execFileSync("ip", ["netns", "list"], { encoding: "utf8" });
  const links = execFileSync("ip", ["-o", "link", "show"], { encoding: "utf8" });
  const loops = execFileSync("losetup", ["-a"], { encoding: "utf8" });
  for (const n of c.nodes) {
    if (n.netns && netns.includes(n.netns)) out.push(`netns ${n.netns}`);
    if (loops.includes(n.diskFile)) out.push(`loop device on ${n.diskFile}`);
    if (!exited(n.pid)) out.push(`keelsond pid ${n.pid}`);
  }
  if (c.state.network && links.includes(`${c.state.network.bridge}:`)) out.push(`bridge ${c.state.network.bridge}`);
  if (fs.existsSync(c.state.dir)) out.push(`dir ${c.state.dir}`);
  if (fs.existsSync(c.state.etcd.dataDir)) out.push(`etcd data ${c.state.etcd.dataDir}`);
  return out;
}

function tempClusterDir(): string {
  return path.join(os.tmpdir(), `keelson-cluster-test-${process.pid}-${Date.now()}`);
}

describe("local cluster", () => {
  it("3 nodes in network namespaces: each registered at its own address; leader killed -9: another leads and the dead node is marked down, then up on return", async (t) => {
    if (!canRun({ root: true, tools: ["etcd", "ip", "losetup"] }, t.task.name)) return t.skip();
    const cluster = await LocalCluster.start({ nodes: 3, dir: tempClusterDir(), diskSizeBytes: 512 * 2 ** 20, leaseTtlS: 2 });
    try {
      const addresses = cluster.nodes.map((n) => n.address);
      expect(new Set(addresses).size).toBe(3);
      for (const n of cluster.nodes) {
        expect(n.netns).toBeTruthy();
        expect(n.loopDevice).toMatch(/^\/dev\/loop\d+$/);
        // Its loop device reads and writes the disk file with direct I/O, as a disk would (no second page cache).
        const loopName = path.basename(n.loopDevice as string);
        expect(fs.readFileSync(`/sys/block/${loopName}/loop/dio`, "utf8").trim()).toBe("1");
        // Each node answers on its own namespace address and knows its zone.
        const info = await cluster.client(n.index).getNode();
        expect(info).toMatchObject({ nodeId: n.nodeId, zone: n.zone, etcdEndpoints: cluster.etcdEndpoint });
        expect(info.pool.path).toBe(n.loopDevice);
      }
      const { nodes } = await waitForNodes(cluster.client(0), (ns) => ns.length === 3 && ns.filter((x) => x.leader).length === 1);
      expect(nodes.map((n) => n.controlAddress).sort()).toEqual(cluster.nodes.map((n) => n.grpcAddress).sort());
      // Each node's disk is in etcd: its loop device and pool space, as that node reports them.
      for (const n of nodes) {
        const own = await cluster.client(cluster.nodes.findIndex((x) => x.nodeId === n.nodeId)).getNode();
        expect(n.disk).toMatchObject({ poolUid: own.pool.uid, path: own.pool.path, totalBytes: own.pool.totalBytes });
        expect(n.disk?.freeBytes).toBeGreaterThan(0);
      }
      const leader = nodes.find((n) => n.leader) as ClusterNode;
      const li = cluster.nodes.findIndex((n) => n.nodeId === leader.nodeId);
      const other = (li + 1) % 3;

      await cluster.kill9(li);
      const failover = await waitForNodes(cluster.client(other), (ns) => {
        const newLeader = ns.find((x) => x.leader);
        const dead = ns.find((x) => x.nodeId === leader.nodeId);
        return newLeader !== undefined && newLeader.nodeId !== leader.nodeId && dead?.state === "down" && !dead.alive;
      });
      console.log(`leader ${leader.nodeId} killed: new leader elected and ${leader.nodeId} marked down after ${failover.ms} ms`);
      // The dead node's disk stays known.
      expect(failover.nodes.find((x) => x.nodeId === leader.nodeId)?.disk?.totalBytes).toBeGreaterThan(0);

      // The reconciler of the new leader carries on: the node returns and is marked up again.
      await cluster.startNode(li);
      const back = await waitForNodes(cluster.client(other), (ns) => ns.find((x) => x.nodeId === leader.nodeId)?.state === "up");
      console.log(`${leader.nodeId} restarted: marked up after ${back.ms} ms`);
      expect(back.nodes.filter((x) => x.leader)).toHaveLength(1);
    } finally {
      await cluster.stop();
    }
    expect(leftovers(cluster)).toEqual([]);
  }, 120_000);

  it("partitioned node (link down in its namespace): its lease expires and it is marked down; healed, it is up again", async (t) => {
    if (!canRun({ root: true, tools: ["etcd", "ip", "losetup"] }, t.task.name)) return t.skip();
    const cluster = await LocalCluster.start({ nodes: 3, dir: tempClusterDir(), diskSizeBytes: 256 * 2 ** 20, leaseTtlS: 2 });
    try {
      const { nodes } = await waitForNodes(cluster.client(0), (ns) => ns.length === 3 && ns.some((x) => x.leader));
      // Cut off a node that is not the leader, and watch from another one.
      const victim = cluster.nodes.find(
        (n) => !nodes.find((x) => x.nodeId === n.nodeId)?.leader,
      ) as (typeof cluster.nodes)[number];
      const watcher = cluster.nodes.find((n) => n.index !== victim.index) as (typeof cluster.nodes)[number];
      await cluster.partition(victim.index);
      const cut = await waitForNodes(
        cluster.client(watcher.index),
        (ns) => ns.find((x) => x.nodeId === victim.nodeId)?.state === "down",
      );
      console.log(`${victim.nodeId} partitioned: marked down after ${cut.ms} ms`);
      // The partitioned node's own control API is unreachable from outside.
      await expect(cluster.client(victim.index).getNode({ timeoutMs: 1000 })).rejects.toThrow();
      await cluster.heal(victim.index);
      const healed = await waitForNodes(
        cluster.client(watcher.index),
        (ns) => ns.find((x) => x.nodeId === victim.nodeId)?.state === "up",
      );
      console.log(`${victim.nodeId} healed: marked up after ${healed.ms} ms`);
    } finally {
      await cluster.stop();
    }
    expect(leftovers(cluster)).toEqual([]);
  }, 120_000);

  it("etcd killed -9 and restarted: calls that need it fail with a typed error meanwhile, then all nodes are alive again under one leader", async (t) => {
    if (!canRun({ tools: ["etcd"] }, t.task.name)) return t.skip();
    const cluster = await LocalCluster.start({
      nodes: 3,
      dir: tempClusterDir(),
      isolation: "loopback",
      diskSizeBytes: 256 * 2 ** 20,
      leaseTtlS: 2,
    });
    try {
      await waitForNodes(cluster.client(0), (ns) => ns.length === 3 && ns.filter((x) => x.leader).length === 1);
      await stopProcess(cluster.state.etcd.pid, "etcd", 0);
      const during = await cluster
        .client(1)
        .listNodes({ timeoutMs: 2000 })
        .then(
          () => "no error",
          (e: unknown) => (isKeelsonError(e) ? e.code : String(e)),
        );
      expect(["UNAVAILABLE", "DEADLINE_EXCEEDED"]).toContain(during);
      // Volumes keep working without etcd: a single-node volume does not need it for I/O.
      expect((await cluster.client(2).getNode()).nodeId).toBe("node3");
      const started = Date.now();
      await cluster.restartEtcd();
      const { nodes, ms } = await waitForNodes(
        cluster.client(0),
        (ns) => ns.length === 3 && ns.every((x) => x.alive && x.state === "up") && ns.filter((x) => x.leader).length === 1,
      );
      console.log(
        `etcd restarted: all ${nodes.length} nodes alive under one leader ${ms} ms after it was back (${Date.now() - started} ms total)`,
      );
    } finally {
      await cluster.stop();
    }
  }, 120_000);

  it("without namespaces (127.0.0.x and plain files): 2 nodes join the same etcd and elect one leader", async (t) => {
    if (!canRun({ tools: ["etcd"] }, t.task.name)) return t.skip();
    const cluster = await LocalCluster.start({
      nodes: 2,
      dir: tempClusterDir(),
      isolation: "loopback",
      diskSizeBytes: 256 * 2 ** 20,
    });
    try {
      expect(cluster.nodes.map((n) => n.address)).toEqual(["127.0.0.11", "127.0.0.12"]);
      // Both alive and up under one leader (waited for: a lease may lapse for a moment on a busy machine).
      const { nodes } = await waitForNodes(
        cluster.client(1),
        (ns) => ns.length === 2 && ns.filter((x) => x.leader).length === 1 && ns.every((n) => n.alive && n.state === "up"),
      );
      expect(nodes.every((n) => n.alive && n.state === "up")).toBe(true);
    } finally {
      await cluster.stop();
    }
    expect(fs.existsSync(cluster.state.dir)).toBe(false);
  }, 60_000);
});
