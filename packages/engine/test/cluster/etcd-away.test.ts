// etcd is not on the write path: the frontend keeps its activity log on the
// replicas, so writes (to cold extents too) and flushes go on while etcd is
// paused or cut off from the frontend's node; etcd is needed only when the
// replica set changes (a fault, an epoch). A takeover while the frontend is
// cut from etcd still fences it through the replicas.
import os from "node:os";
import path from "node:path";
import { describe, expect, it } from "vitest";
import { LocalCluster, type StartedLocalCluster } from "../../src/local-cluster/local-cluster.js";
import { trackClusters } from "../helpers/clusters.js";
import { canRun } from "../helpers/env.js";
import { NbdTestClient } from "../helpers/nbd-client.js";
import { run } from "../helpers/process.js";
import { readAll } from "../helpers/stamps.js";

const MIB = 1024 * 1024;
const SIZE = 128 * MIB;
const WRITE_BYTES = 256 * 1024;

const track = trackClusters();

async function threeNodes(): Promise<StartedLocalCluster> {
  const dir = path.join(os.tmpdir(), `keelson-etcd-away-${process.pid}-${Date.now()}`);
  return track(await LocalCluster.start({ nodes: 3, dir, diskSizeBytes: 384 * MIB }));
}

/** A 256 KiB write whose every byte names the write: `n` mod 251, plus one. */
function payload(n: number): Buffer {
  return Buffer.alloc(WRITE_BYTES, (n % 251) + 1);
}

/**
 * Writes `[from, to)` in 256 KiB writes, 4 in flight, then flushes; every
 * errno (0 is success) and the slowest request's time.
 */
async function writeRange(client: NbdTestClient, from: number, to: number): Promise<{ errors: number[]; slowestMs: number }> {
  const errors: number[] = [];
  let slowestMs = 0;
  let next = from;
  const worker = async (): Promise<void> => {
    while (next < to) {
      const at = next;
      next += WRITE_BYTES;
      const started = Date.now();
      const r = await client.write(at, payload(at / WRITE_BYTES));
      slowestMs = Math.max(slowestMs, Date.now() - started);
      errors.push(r.error);
    }
  };
  await Promise.all([worker(), worker(), worker(), worker()]);
  const started = Date.now();
  errors.push((await client.flush()).error);
  slowestMs = Math.max(slowestMs, Date.now() - started);
  return { errors, slowestMs };
}

/** Where the written range differs from what `writeRange` wrote: the first 256 KiB write that reads back otherwise, or -1. */
function firstWrong(image: Buffer, from: number, to: number): number {
  for (let at = from; at < to; at += WRITE_BYTES) {
    if (!image.subarray(at, at + WRITE_BYTES).equals(payload(at / WRITE_BYTES))) return at;
  }
  return -1;
}

async function expectReplicasEqual(cluster: StartedLocalCluster, epoch: number): Promise<void> {
  const images = await Promise.all(cluster.nodes.map((n) => readAll(n.nbdSocket, `db#${epoch}`, SIZE)));
  for (const [k, image] of images.entries()) expect(image.equals(images[0] as Buffer), `node${k + 1}'s replica`).toBe(true);
}

/** Polls `attempt` every 50 ms until it resolves; the time it took (ms), or throws after `limitMs`. */
async function timeUntil(attempt: () => Promise<unknown>, limitMs: number): Promise<number> {
  const started = Date.now();
  let last: unknown;
  while (Date.now() - started < limitMs) {
    try {
      await attempt();
      return Date.now() - started;
    } catch (error) {
      last = error;
      await new Promise((r) => setTimeout(r, 50));
    }
  }
  throw new Error(`not done in ${limitMs} ms: ${String(last)}`);
}

describe("etcd is not on the write path", () => {
  it("etcd paused (SIGSTOP) for 12 s: sequential writes over extents never written before go on and are flushed, nothing is faulted, and the replicas are equal", async (t) => {
    if (!canRun({ root: true, tools: ["etcd", "ip", "losetup"] }, t.task.name)) return t.skip();
    const cluster = await threeNodes();
    const n1 = cluster.client(0);
    await n1.createVolume({ name: "db", sizeBytes: SIZE, replicas: 3 });
    await n1.attachVolume({ name: "db", replicaTimeoutMs: 2000 });
    const client = await NbdTestClient.open(cluster.nodes[0]?.nbdAddress as string, "db");
    try {
      expect((await writeRange(client, 0, 16 * MIB)).errors.every((e) => e === 0)).toBe(true);
      // Long enough for those extents to leave the activity log: every write below is to a cold extent.
      await new Promise((r) => setTimeout(r, 3_000));
      const etcdPid = cluster.state.etcd.pid;
      process.kill(etcdPid, "SIGSTOP");
      const pausedAt = Date.now();
      let during: { errors: number[]; slowestMs: number };
      try {
        during = await writeRange(client, 32 * MIB, 96 * MIB);
        const left = 12_000 - (Date.now() - pausedAt);
        if (left > 0) await new Promise((r) => setTimeout(r, left));
      } finally {
        process.kill(etcdPid, "SIGCONT");
      }
      const resumedAt = Date.now();
      const failed = during.errors.filter((e) => e !== 0).length;
      console.log(
        `etcd paused ${((resumedAt - pausedAt) / 1000).toFixed(1)} s: ${during.errors.length} requests (64 MiB of cold extents + FLUSH), ${failed} failed, slowest ${during.slowestMs} ms`,
      );
      expect(failed, "writes or the flush failed while etcd was paused").toBe(0);
      // After etcd returns: a control call that needs etcd, and a write to another cold extent.
      const controlMs = await timeUntil(() => n1.getVolume({ name: "db" }), 30_000);
      const writeMs = await timeUntil(async () => {
        const r = await client.write(100 * MIB, payload(100 * MIB));
        if (r.error !== 0) throw new Error(`errno ${r.error}`);
      }, 30_000);
      const aliveMs = await timeUntil(async () => {
        const nodes = await n1.listNodes();
        if (!nodes.every((n) => n.alive)) throw new Error("a node is not alive yet");
      }, 30_000);
      console.log(
        `after etcd returned: control API answered in ${controlMs} ms, a cold write took ${writeMs} ms, every node alive in ${aliveMs} ms`,
      );
      const attachment = await n1.getAttachment({ name: "db" });
      expect(attachment.replicas.map((r) => r.state)).toEqual(["healthy", "healthy", "healthy"]);
      const image = await readAll(cluster.nodes[0]?.nbdAddress as string, "db", SIZE);
      expect(firstWrong(image, 0, 16 * MIB)).toBe(-1);
      expect(firstWrong(image, 32 * MIB, 96 * MIB)).toBe(-1);
      await client.disconnect();
      await n1.detachVolume({ name: "db" });
      await expectReplicasEqual(cluster, attachment.epoch);
    } finally {
      client.close();
    }
  }, 240_000);

  it("the frontend's node cut from etcd only: writes and flushes go on; once its lease lapsed a takeover on node2 fences it, serves every acknowledged write, and node1 acknowledges nothing more", async (t) => {
    if (!canRun({ root: true, tools: ["etcd", "ip", "losetup"] }, t.task.name)) return t.skip();
    const cluster = await threeNodes();
    const n1 = cluster.client(0);
    await n1.createVolume({ name: "db", sizeBytes: SIZE, replicas: 3 });
    await n1.attachVolume({ name: "db", replicaTimeoutMs: 2000 });
    const ns = cluster.state.nodes[0]?.netns as string;
    // etcd listens on the host's address on the cluster network, which is also where this test's
    // TCP connections come from: the client reaches node1 over its unix socket, and the control
    // API through node2, so that only etcd is out of node1's reach.
    const etcdHost = new URL(cluster.etcdEndpoint).hostname;
    const route = (op: "add" | "del") => run("ip", ["netns", "exec", ns, "ip", "route", op, "blackhole", `${etcdHost}/32`]);
    const client = await NbdTestClient.open(cluster.nodes[0]?.nbdSocket as string, "db");
    let routed = false;
    try {
      await route("add");
      routed = true;
      const cut = await writeRange(client, 0, 32 * MIB);
      console.log(`node1 cut from etcd: ${cut.errors.length} requests, slowest ${cut.slowestMs} ms`);
      expect(
        cut.errors.filter((e) => e !== 0),
        "writes or the flush failed while only etcd was out of reach",
      ).toEqual([]);
      // node1's lease lapses (3 s) while it cannot reach etcd: the operator (or CSI) moves the volume.
      const n2 = cluster.client(1);
      await timeUntil(async () => {
        const nodes = await n2.listNodes();
        if (nodes.find((n) => n.nodeId === "node1")?.alive) throw new Error("node1 still alive");
      }, 30_000);
      const moved = await n2.attachVolume({ name: "db", nodeId: "node2", takeover: true, replicaTimeoutMs: 2000 });
      expect(moved.nodeId).toBe("node2");
      const image = await readAll(cluster.nodes[1]?.nbdAddress as string, "db", SIZE);
      expect(firstWrong(image, 0, 32 * MIB), "an acknowledged write is missing on node2").toBe(-1);
      // The old frontend is fenced by the replicas (it could ask etcd nothing).
      const late = await client.write(64 * MIB, payload(1));
      expect(late.error, "node1 acknowledged a write after the takeover").not.toBe(0);
      await route("del");
      routed = false;
      const healed = await timeUntil(async () => {
        const a = await n2.getAttachment({ name: "db" });
        if (!a.replicas.every((r) => r.state === "healthy")) throw new Error(JSON.stringify(a.replicas));
      }, 60_000);
      console.log(`node1 back in reach of etcd: every replica healthy under node2 in ${healed} ms`);
      const after = await readAll(cluster.nodes[1]?.nbdAddress as string, "db", SIZE);
      expect(after.subarray(64 * MIB, 64 * MIB + WRITE_BYTES).equals(Buffer.alloc(WRITE_BYTES))).toBe(true);
      await n2.detachVolume({ name: "db", force: true });
      await expectReplicasEqual(cluster, moved.epoch);
    } finally {
      if (routed) await route("del").catch(() => undefined);
      client.close();
    }
  }, 240_000);
});
