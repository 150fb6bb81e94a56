import fs from "node:fs";
import os from "node:os";
import path from "node:path";
import type { Attachment, KeelsonClient } from "@keelson/sdk";
import { afterEach, beforeEach, describe, expect, it } from "vitest";
import { LocalCluster, type StartedLocalCluster } from "../../src/local-cluster/local-cluster.js";
import { Cleanup } from "../helpers/cleanup.js";
import { canRun } from "../helpers/env.js";
import { NbdTestClient } from "../helpers/nbd-client.js";
import { mountSmallTmpfs, type SmallFs } from "../helpers/small-fs.js";
import { CHUNK, readAll, stamp } from "../helpers/stamps.js";

const MIB = 1024 * 1024;
const SIZE = 64 * MIB;
const ENOSPC = 28;
/** Writes one MiB apart: each lands in an extent of its own, new on every replica. */
const STRIDE = MIB;

let cleanup: Cleanup;
/** The cluster of the running test, whose log tails a failure prints. */
let cluster: StartedLocalCluster | null = null;

beforeEach(() => {
  cleanup = new Cleanup();
  cluster = null;
});
// A timed-out test skips its own `await using`: the hook still stops the cluster, then unmounts.
afterEach(async (ctx) => {
  const failed = ctx.task.result?.state === "fail" || (ctx.task.result?.errors?.length ?? 0) > 0;
  if (failed && cluster) console.error(`logs of the failed test's cluster in ${cluster.state.dir}:\n${cluster.logTails(60)}`);
  await cleanup[Symbol.asyncDispose]();
});

/** A 3-node cluster whose disk files for the nodes in `onSmallFs` lie on one small tmpfs. */
async function clusterWithSmallFs(options: {
  onSmallFs: number[];
  smallFsBytes: number;
  diskKind: "loop" | "file";
}): Promise<{ cluster: StartedLocalCluster; small: SmallFs }> {
  const base = fs.mkdtempSync(path.join(os.tmpdir(), "keelson-enospc-cluster-"));
  cleanup.add(`rm -r ${base}`, () => fs.rmSync(base, { recursive: true, force: true }));
  const small = await mountSmallTmpfs(base, options.smallFsBytes, cleanup);
  const diskDirs = [0, 1, 2].map((i) => (options.onSmallFs.includes(i) ? small.dir : undefined));
  const started = await LocalCluster.start({
    nodes: 3,
    dir: path.join(base, "cluster"),
    diskSizeBytes: 256 * MIB,
    leaseTtlS: 2,
    diskDirs,
    diskKind: options.diskKind,
  });
  cluster = started;
  cleanup.add("stop the cluster", () => started.stop());
  return { cluster: started, small };
}

/** Polls the attachment of "db" until `ok` holds; returns it. */
async function waitForAttachment(client: KeelsonClient, ok: (a: Attachment) => boolean, timeoutMs = 30_000): Promise<Attachment> {
  const deadline = Date.now() + timeoutMs;
  let last: Attachment | undefined;
  while (Date.now() < deadline) {
    last = await client.getAttachment({ name: "db" });
    if (ok(last)) return last;
    await new Promise((r) => setTimeout(r, 100));
  }
  throw new Error(`attachment did not reach the expected state in ${timeoutMs} ms: ${JSON.stringify(last)}`);
}

/** Every acknowledged chunk holds its write in `image`. */
function expectChunks(image: Buffer, acked: ReadonlyMap<number, number>, what: string): void {
  for (const [offset, id] of acked) {
    expect(image.subarray(offset, offset + CHUNK).equals(stamp(id)), `${what}: chunk at ${offset} is write ${id}`).toBe(true);
  }
}

/** Each node's replica of "db" read on its own node under `epoch`: all the same. */
async function expectReplicasIdentical(c: StartedLocalCluster, epoch: number): Promise<Buffer> {
  const images: Buffer[] = [];
  for (const n of c.nodes) images.push(await readAll(n.nbdSocket, `db#${epoch}`, SIZE));
  for (let k = 1; k < images.length; k++) {
    expect((images[k] as Buffer).equals(images[0] as Buffer), `replica on node${k + 1} differs from node1's`).toBe(true);
  }
  return images[0] as Buffer;
}

/**
 * Creates and attaches the 3-replica volume on node1, writes 8 stamped
 * chunks (ids 1-8) and flushes: the client and what it acknowledged.
 */
async function attachAndWriteFirst(c: StartedLocalCluster): Promise<{ front: NbdTestClient; acked: Map<number, number> }> {
  const c1 = c.client(0);
  await c1.createVolume({ name: "db", sizeBytes: SIZE, replicas: 3 });
  await c1.attachVolume({ name: "db", replicaTimeoutMs: 1000 });
  const front = await NbdTestClient.open(c.nodes[0]?.nbdAddress as string, "db");
  const acked = new Map<number, number>();
  for (let at = 0, id = 1; at < 8 * STRIDE; at += STRIDE, id++) {
    expect((await front.write(at, stamp(id))).error).toBe(0);
    acked.set(at, id);
  }
  expect((await front.flush()).error).toBe(0);
  return { front, acked };
}

describe("host filesystem full under replicas", () => {
  it("one replica's host filesystem full (loop-device disk): that replica is faulted, the volume takes writes degraded with no acknowledged write lost, and it is rebuilt once space is back", async (t) => {
    if (!canRun({ root: true, tools: ["etcd", "ip", "losetup", "mount"] }, t.task.name)) return t.skip();
    const { cluster: c, small } = await clusterWithSmallFs({ onSmallFs: [2], smallFsBytes: 64 * MIB, diskKind: "loop" });
    const c1 = c.client(0);
    const { front, acked } = await attachAndWriteFirst(c);
    let id = acked.size;

    // node3's host filesystem fills up; the next writes need new space under its loop device.
    small.fill("filler");
    const errors: number[] = [];
    for (let at = 8 * STRIDE; at < 40 * STRIDE; at += STRIDE) {
      const r = await front.write(at, stamp(++id));
      if (r.error === 0) acked.set(at, id);
      else errors.push(r.error);
      if (at % (8 * STRIDE) === 0) {
        const f = await front.flush();
        if (f.error !== 0) errors.push(f.error);
      }
    }
    const f = await front.flush();
    console.log(`one replica full: errors seen by the client ${JSON.stringify(errors)}, last FLUSH ${f.error}`);
    expect(errors, "the volume keeps taking writes degraded").toEqual([]);
    expect(f.error).toBe(0);
    const degraded = await waitForAttachment(c1, (a) => a.replicas.find((r) => r.nodeId === "node3")?.state === "faulted");
    expect(
      degraded.replicas
        .filter((r) => r.state === "healthy")
        .map((r) => r.nodeId)
        .sort(),
    ).toEqual(["node1", "node2"]);
    expectChunks(await readAll(c.nodes[0]?.nbdAddress as string, "db", SIZE), acked, "degraded");
    await front.disconnect();
    // What node3 saw: the loop device took the writes into the page cache, and its fsync failed with EIO
    // (the kernel logs "critical space allocation error" for the loop device; the errno is lost on the way).
    const reason = degraded.replicas.find((r) => r.nodeId === "node3")?.reason ?? "";
    console.log(`one replica full: node3 faulted because: ${reason}`);
    expect(reason).toContain("fdatasync of the pool failed (EIO");

    // Space comes back. A loop device reported the full host as EIO at fsync, which fails node3's pool until it
    // restarts (the kernel may have dropped the pages it could not write), so node3 restarts and is rebuilt.
    small.free("filler");
    const startedAt = Date.now();
    await c.kill9(2);
    await c.startNode(2);
    const healed = await waitForAttachment(
      c1,
      (a) => a.state === "healthy" && a.replicas.every((r) => r.state === "healthy"),
      60_000,
    );
    const rebuilt = healed.replicas.find((r) => r.nodeId === "node3")?.lastRebuild;
    console.log(
      `one replica full: node3 rebuilt ${((rebuilt?.bytes ?? 0) / MIB).toFixed(0)} MiB in ${rebuilt?.durationMs} ms, healthy ${Date.now() - startedAt} ms after space was freed and it restarted`,
    );
    expectChunks(await expectReplicasIdentical(c, healed.epoch), acked, "rebuilt");
  }, 120_000);

  it("every replica's host filesystem full (file-backed pools): the client gets ENOSPC, no replica is faulted and all stay equal, FLUSH works, and writes work again once space is freed", async (t) => {
    if (!canRun({ root: true, tools: ["etcd", "ip", "mount"] }, t.task.name)) return t.skip();
    // Three 256M pools reserve 15 MiB of metadata each on the shared filesystem.
    const { cluster: c, small } = await clusterWithSmallFs({ onSmallFs: [0, 1, 2], smallFsBytes: 80 * MIB, diskKind: "file" });
    const c1 = c.client(0);
    const { front, acked } = await attachAndWriteFirst(c);
    let id = acked.size;

    // The one host filesystem under all three pools fills up: every replica refuses a write that needs new space.
    small.fill("filler");
    const refused: number[] = [];
    for (let at = 8 * STRIDE; at < 16 * STRIDE; at += STRIDE) refused.push((await front.write(at, stamp(++id))).error);
    expect(refused, "writes needing new space on every replica").toEqual(Array(8).fill(ENOSPC));
    // Space already allocated is overwritten, and FLUSH makes it durable (metadata areas are preallocated).
    for (let at = 0; at < 4 * STRIDE; at += STRIDE) {
      expect((await front.write(at, stamp(++id))).error).toBe(0);
      acked.set(at, id);
    }
    expect((await front.flush()).error).toBe(0);
    const full = await c1.getAttachment({ name: "db" });
    expect(full.replicas.map((r) => `${r.nodeId}:${r.state}`).sort()).toEqual([
      "node1:healthy",
      "node2:healthy",
      "node3:healthy",
    ]);
    expectChunks(await expectReplicasIdentical(c, full.epoch), acked, "full");

    // Space comes back: the same writes succeed, without a restart, on all three replicas.
    small.free("filler");
    for (let at = 8 * STRIDE; at < 16 * STRIDE; at += STRIDE) {
      expect((await front.write(at, stamp(++id))).error, `write at ${at} after space was freed`).toBe(0);
      acked.set(at, id);
    }
    expect((await front.flush()).error).toBe(0);
    await front.disconnect();
    const after = await c1.getAttachment({ name: "db" });
    expect(after.replicas.every((r) => r.state === "healthy")).toBe(true);
    expectChunks(await expectReplicasIdentical(c, after.epoch), acked, "after space was freed");
    console.log(
      `every replica full: 8 writes refused ENOSPC by all three replicas, none faulted; all succeed once space is back`,
    );
  }, 120_000);
});
