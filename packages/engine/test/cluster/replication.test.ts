import os from "node:os";
import path from "node:path";
import { type Attachment, isKeelsonError, type KeelsonClient, type KeelsonEvent } from "@keelson/sdk";
import { describe, expect, it } from "vitest";
import { LocalCluster, type StartedLocalCluster } from "../../src/local-cluster/local-cluster.js";
import { ReplicaClient } from "../../src/replication/replica-client.js";
import { writeReplicaAsNode } from "../helpers/as-node.js";
import { trackClusters } from "../helpers/clusters.js";
import { canRun } from "../helpers/env.js";
import { NbdTestClient } from "../helpers/nbd-client.js";
import { run } from "../helpers/process.js";
import { CHUNK, readAll as readAllOf, stamp } from "../helpers/stamps.js";
import { waitFor } from "../helpers/wait.js";

const MIB = 1024 * 1024;
const SIZE = 64 * MIB;
/** fio's part of the volume in the replica-loss test; the chunk writers use the rest. */
const FIO_BYTES = 40 * MIB;
const WRITERS = 4;
/** The replica deadline (`replicaTimeoutMs`) these tests attach with. */
const REPLICA_TIMEOUT_MS = 1000;
/**
 * Slack over the replica deadline for the stall a replica loss may cause: a
 * loaded machine's timers fire late. A correctness bound (no write waits on a
 * lost replica much past its deadline), not a benchmark.
 */
const STALL_MARGIN_MS = 2000;
/** Chunks acknowledged before a kill, so that a lost acknowledged write would show (8 MiB). */
const ACKED_BEFORE_KILL = 128;
/** The start of the cluster's history: a watch from here sees every event, however late it is opened. */
const HISTORY_START = { revision: 1, index: 0 };

/**
 * Writers that own disjoint chunks and write them one at a time, so each
 * chunk's last acknowledged write is known exactly. Runs until `stop()`.
 */
function workload(
  address: string,
  name: string,
  window: { firstChunk: number; chunks: number } = { firstChunk: 0, chunks: SIZE / CHUNK },
) {
  const lastAcked = new Map<number, number>();
  /** The last write sent to each chunk: it may be in flight when a node dies (neither acknowledged nor refused). */
  const lastSent = new Map<number, number>();
  const errors: number[] = [];
  let nextId = 1;
  let running = true;
  const { firstChunk, chunks } = window;
  const writer = async (w: number): Promise<void> => {
    const c = await NbdTestClient.open(address, name);
    for (let i = 0; running; i++) {
      const chunk = firstChunk + w + WRITERS * (i % (chunks / WRITERS));
      const id = nextId++;
      lastSent.set(chunk, id);
      const r = await c.write(chunk * CHUNK, stamp(id));
      if (r.error === 0) lastAcked.set(chunk, id);
      else {
        errors.push(r.error);
        // A dead connection fails every request at once, without yielding to timers: stop, or this spins.
        if (c.raw.closed) break;
      }
    }
    c.close();
  };
  const done = Promise.all(Array.from({ length: WRITERS }, (_, w) => writer(w)));
  return {
    lastAcked,
    lastSent,
    errors,
    writes: () => nextId - 1,
    stop: async () => {
      running = false;
      await done;
    },
  };
}

/** The whole volume through export `name` on `address`. */
function readAll(address: string, name: string): Promise<Buffer> {
  return readAllOf(address, name, SIZE);
}

/**
 * Every acknowledged chunk holds its last acknowledged write, or the one write
 * sent after it that was in flight when the frontend died (never a torn or
 * older one), read through `name` on `address`.
 */
async function verifyAcked(
  address: string,
  name: string,
  load: { lastAcked: Map<number, number>; lastSent: Map<number, number> },
): Promise<void> {
  const image = await readAll(address, name);
  for (const [chunk, id] of load.lastAcked) {
    const got = image.readBigUInt64BE(chunk * CHUNK);
    // One comparison per chunk: an expect per word made this check take 24 s.
    const torn = !image.subarray(chunk * CHUNK, (chunk + 1) * CHUNK).equals(stamp(Number(got)));
    expect(torn, `chunk ${chunk} torn`).toBe(false);
    const allowed = [BigInt(id), BigInt(load.lastSent.get(chunk) ?? id)];
    expect(allowed, `chunk ${chunk} holds write ${got}; last acknowledged ${id}`).toContain(got);
  }
}

/** fio through NBD on the first FIO_BYTES of `name`: 4k random writes (each block once) with crc32c headers. */
function fioArgs(address: string, name: string, extra: string[]): string[] {
  return [
    "--name=db",
    "--ioengine=nbd",
    `--uri=nbd://${address}/${name}`,
    "--rw=randwrite",
    "--bs=4k",
    "--iodepth=16",
    `--size=${FIO_BYTES}`,
    "--verify=crc32c",
    "--verify_fatal=1",
    "--output-format=json",
    ...extra,
  ];
}

function fioJob(stdout: string): { error: number; write: { io_bytes: number }; read: { io_bytes: number } } {
  return (JSON.parse(stdout.slice(stdout.indexOf("{"))) as { jobs: Array<ReturnType<typeof fioJob>> }).jobs[0] as ReturnType<
    typeof fioJob
  >;
}

/** Polls the attachment until `ok` holds (30 s at most); returns it and what was seen on the way. */
async function waitForAttachment(
  client: KeelsonClient,
  ok: (a: Attachment) => boolean,
  timeoutMs = 30_000,
): Promise<{ attachment: Attachment; seen: Attachment[] }> {
  const deadline = Date.now() + timeoutMs;
  const seen: Attachment[] = [];
  while (Date.now() < deadline) {
    const a = await client.getAttachment({ name: "db" });
    seen.push(a);
    if (ok(a)) return { attachment: a, seen };
    await new Promise((r) => setTimeout(r, 100));
  }
  throw new Error(`attachment did not reach the expected state in ${timeoutMs} ms: ${JSON.stringify(seen.at(-1))}`);
}

/** Every replica's bytes, read on its own node under the current epoch, must be the same. */
async function expectReplicasIdentical(cluster: StartedLocalCluster, nodeIndexes: number[], epoch: number): Promise<void> {
  const images: Buffer[] = [];
  for (const i of nodeIndexes) images.push(await readAll(cluster.nodes[i]?.nbdSocket as string, `db#${epoch}`));
  for (let k = 1; k < images.length; k++) {
    expect((images[k] as Buffer).equals(images[0] as Buffer), `replica on node${(nodeIndexes[k] as number) + 1} differs`).toBe(
      true,
    );
  }
}

const allHealthy = (a: Attachment): boolean => a.state === "healthy" && a.replicas.every((r) => r.state === "healthy");

const track = trackClusters();

async function threeNodeCluster(): Promise<StartedLocalCluster> {
  const dir = path.join(os.tmpdir(), `keelson-repl-${process.pid}-${Date.now()}`);
  const cluster = await LocalCluster.start({ nodes: 3, dir, diskSizeBytes: 512 * MIB, leaseTtlS: 2 });
  track(cluster);
  return cluster;
}

/**
 * One NBD write by an application on the node itself, over the node's NBD
 * unix socket (a partition cuts the node off from the others, not from its
 * local clients). Resolves with "ok" or the error code.
 */
async function writeOnNode(socket: string, offset: number, id: number): Promise<string> {
  try {
    const c = await ReplicaClient.connect(socket, "db", 30_000);
    try {
      await c.write(offset, stamp(id), false);
      return "ok";
    } finally {
      c.close();
    }
  } catch (e) {
    return isKeelsonError(e) ? e.code : String(e);
  }
}

describe("synchronous replication", () => {
  it("replica node killed -9 under fio with verify: fio sees no error and every block verifies; the node returns and its replica is rebuilt (incrementally, under load) until all three are identical", async (t) => {
    if (!canRun({ root: true, tools: ["etcd", "ip", "losetup", "fio"] }, t.task.name)) return t.skip();
    const cluster = await threeNodeCluster();
    const n1 = cluster.client(0);
    await n1.createVolume({ name: "db", sizeBytes: SIZE, replicas: 3 });
    const att = await n1.attachVolume({ name: "db", replicaTimeoutMs: REPLICA_TIMEOUT_MS });
    expect(att).toMatchObject({ state: "healthy", epoch: 1 });
    expect(att.replicas.map((r) => r.nodeId).sort()).toEqual(["node1", "node2", "node3"]);
    const address = cluster.nodes[0]?.nbdAddress as string;
    // Paced so the kill lands in the write phase; the verify phase then reads every block back.
    const fio = run("fio", fioArgs(address, "db", ["--do_verify=1", "--rate_iops=2500"]), { timeoutMs: 90_000 });
    await new Promise((r) => setTimeout(r, 1000));
    await cluster.kill9(2);
    const job = fioJob((await fio).stdout);
    expect(job.error).toBe(0);
    expect(job.write.io_bytes).toBe(FIO_BYTES);
    expect(job.read.io_bytes).toBe(FIO_BYTES);
    const degraded = await n1.getAttachment({ name: "db" });
    console.log(
      `replica node3 killed under fio: fio 0 errors, ${FIO_BYTES / MIB} MiB verified; volume ${degraded.state}, replica stall ${degraded.maxStallMs} ms`,
    );
    expect(degraded.state).toBe("degraded");
    expect(degraded.replicas.find((r) => r.nodeId === "node3")?.state).toBe("faulted");
    // Every request to a replica has the replica deadline: a lost one stalls writes that long at most.
    expect(degraded.maxStallMs, "a write waited on the lost replica past its deadline").toBeLessThan(
      REPLICA_TIMEOUT_MS + STALL_MARGIN_MS,
    );

    // node3 comes back while writers keep going: it is rebuilt under load.
    const load = workload(address, "db", { firstChunk: FIO_BYTES / CHUNK, chunks: (SIZE - FIO_BYTES) / CHUNK });
    await waitFor(() => load.lastAcked.size >= WRITERS, { what: "a write acknowledged to every writer", timeoutMs: 30_000 });
    await cluster.startNode(2);
    const { attachment: healed, seen } = await waitForAttachment(n1, allHealthy);
    await load.stop();
    expect(load.errors).toEqual([]);
    const node3 = healed.replicas.find((r) => r.nodeId === "node3");
    expect(node3?.lastRebuild?.full).toBe(false);
    expect(healed.rebuildsCompleted).toBe(1);
    const rebuilding = seen.filter((a) => a.replicas.some((r) => r.state === "rebuilding")).length;
    const { bytes = 0, durationMs = 0 } = node3?.lastRebuild ?? {};
    console.log(
      `node3 back: rebuilt incrementally, ${(bytes / MIB).toFixed(0)} MiB of ${SIZE / MIB} MiB in ${durationMs} ms (${(bytes / MIB / Math.max(durationMs / 1000, 0.001)).toFixed(0)} MiB/s) while ${load.writes()} writes went on; seen rebuilding in ${rebuilding} polls`,
    );
    await verifyAcked(address, "db", load);
    const reverify = fioJob((await run("fio", fioArgs(address, "db", ["--verify_only"]), { timeoutMs: 60_000 })).stdout);
    expect(reverify.error).toBe(0);
    await n1.getAttachment({ name: "db" });
    await expectReplicasIdentical(cluster, [0, 1, 2], healed.epoch);
  }, 150_000);

  it("frontend node killed -9 mid-workload, volume attached on another node: every write the old frontend acknowledged reads back (RTO reported)", async (t) => {
    if (!canRun({ root: true, tools: ["etcd", "ip", "losetup"] }, t.task.name)) return t.skip();
    const cluster = await threeNodeCluster();
    await cluster.client(0).createVolume({ name: "db", sizeBytes: SIZE, replicas: 3 });
    await cluster.client(0).attachVolume({ name: "db", replicaTimeoutMs: 1000 });
    const load = workload(cluster.nodes[0]?.nbdAddress as string, "db");
    await waitFor(() => load.lastAcked.size >= ACKED_BEFORE_KILL, {
      what: `${ACKED_BEFORE_KILL} chunks acknowledged`,
      timeoutMs: 30_000,
    });
    const killedAt = Date.now();
    await cluster.kill9(0);
    await load.stop();
    const att = await cluster
      .client(1)
      .attachVolume({ name: "db", replicaTimeoutMs: 1000, takeover: true }, { timeoutMs: 15_000 });
    const c = await NbdTestClient.open(cluster.nodes[1]?.nbdAddress as string, "db");
    const first = await c.read(0, 4096);
    const rtoMs = Date.now() - killedAt;
    c.close();
    expect(first.error).toBe(0);
    console.log(
      `frontend node1 killed: ${load.lastAcked.size} chunks acknowledged; attached on node2 at epoch ${att.epoch} (${att.state}); RTO ${rtoMs} ms`,
    );
    expect(att.epoch).toBe(2);
    // node1's replica could not be reached, so it is not served from (it stays in sync in the record
    // until the new frontend acknowledges a write it misses: unreachable is not out of sync).
    expect(att.replicas.find((r) => r.nodeId === "node1")?.state).toBe("faulted");
    // node2 (local) is the source; node3 is made equal to it where node1's activity log says writes were under way.
    expect(att.replicas.find((r) => r.nodeId === "node2")?.state).toBe("healthy");
    expect(att.replicas.find((r) => r.nodeId === "node3")?.state).not.toBe("faulted");
    await verifyAcked(cluster.nodes[1]?.nbdAddress as string, "db", load);
    // node1 returns. It held every write acknowledged before it died, so it lacks only what the old
    // frontend's activity log names and what the new one wrote since: an incremental rebuild.
    await cluster.startNode(0);
    const { attachment: healed } = await waitForAttachment(cluster.client(1), allHealthy);
    const node1 = healed.replicas.find((r) => r.nodeId === "node1");
    expect(node1?.lastRebuild?.full).toBe(false);
    const resynced = healed.replicas.find((r) => r.nodeId === "node3")?.lastRebuild;
    expect(resynced?.full).toBe(false);
    const { bytes = 0, durationMs = 0 } = node1?.lastRebuild ?? {};
    console.log(
      `node1 back: incremental rebuild ${(bytes / MIB).toFixed(0)} MiB in ${durationMs} ms (${(bytes / MIB / Math.max(durationMs / 1000, 0.001)).toFixed(0)} MiB/s); node3 resynced ${((resynced?.bytes ?? 0) / MIB).toFixed(0)} MiB (the old frontend's activity log) in ${resynced?.durationMs} ms`,
    );
    await expectReplicasIdentical(cluster, [0, 1, 2], healed.epoch);
  }, 120_000);

  it("a write the dead frontend left on one replica only: the next attachment makes the in-sync replicas equal in the extents of the old activity log, so reads never depend on which replica answers", async (t) => {
    if (!canRun({ root: true, tools: ["etcd", "ip", "losetup"] }, t.task.name)) return t.skip();
    const cluster = await threeNodeCluster();
    await cluster.client(0).createVolume({ name: "db", sizeBytes: SIZE, replicas: 3 });
    await cluster.client(0).attachVolume({ name: "db", replicaTimeoutMs: 1000 });
    const front = await NbdTestClient.open(cluster.nodes[0]?.nbdAddress as string, "db");
    expect((await front.write(0, stamp(1))).error).toBe(0);
    const torn = 16 * MIB;
    expect((await front.write(torn, stamp(2))).error).toBe(0);
    // As if node1 had sent its next write to node3 and died before node2 got it. The same write again
    // keeps the extent in node1's activity log (writing as node1 takes a process start).
    await writeReplicaAsNode(cluster, 0, 2, "db#1", torn + CHUNK, stamp(99));
    expect((await front.write(torn, stamp(2))).error).toBe(0);
    front.close();
    await cluster.kill9(0);
    const att = await cluster
      .client(1)
      .attachVolume({ name: "db", replicaTimeoutMs: 1000, takeover: true }, { timeoutMs: 15_000 });
    expect(att.epoch).toBe(2);
    const { attachment } = await waitForAttachment(cluster.client(1), (a) =>
      a.replicas.every((r) => r.nodeId === "node1" || r.state === "healthy"),
    );
    const node3 = attachment.replicas.find((r) => r.nodeId === "node3");
    expect(node3?.lastRebuild?.full).toBe(false);
    const bytes = node3?.lastRebuild?.bytes ?? 0;
    expect(bytes).toBeGreaterThanOrEqual(4 * MIB);
    expect(bytes).toBeLessThan(SIZE);
    console.log(
      `half-written extent: node3 resynced ${bytes / MIB} MiB of ${SIZE / MIB} MiB from node2 in ${node3?.lastRebuild?.durationMs} ms`,
    );
    await expectReplicasIdentical(cluster, [1, 2], attachment.epoch);
    const image = await readAll(cluster.nodes[1]?.nbdAddress as string, "db");
    expect(image.readBigUInt64BE(0)).toBe(1n);
    expect(image.readBigUInt64BE(torn)).toBe(2n);
    expect(image.readBigUInt64BE(torn + CHUNK)).toBe(0n); // node2 never had it: the source's view wins
  }, 120_000);

  it("a rebuild cut short (its replica killed again mid-copy, the copy paced by --rebuild-rate) resumes incrementally, not from scratch", async (t) => {
    if (!canRun({ root: true, tools: ["etcd", "ip", "losetup"] }, t.task.name)) return t.skip();
    const dir = path.join(os.tmpdir(), `keelson-repl-${process.pid}-${Date.now()}`);
    const cluster = track(
      await LocalCluster.start({
        nodes: 3,
        dir,
        diskSizeBytes: 512 * MIB,
        leaseTtlS: 2,
        keelsondArgs: ["--rebuild-rate", "16M"],
      }),
    );
    const c1 = cluster.client(0);
    await c1.createVolume({ name: "db", sizeBytes: SIZE, replicas: 3 });
    await c1.attachVolume({ name: "db", replicaTimeoutMs: 1000 });
    await cluster.kill9(2);
    const load = workload(cluster.nodes[0]?.nbdAddress as string, "db");
    await waitForAttachment(c1, (a) => a.replicas.find((r) => r.nodeId === "node3")?.state === "faulted");
    // node3 misses half the volume, so the paced copy below takes seconds and the kill lands in it.
    const writesAtFault = load.writes();
    await waitFor(() => load.writes() - writesAtFault >= SIZE / CHUNK / 2, {
      what: "writes to half the volume's chunks after node3 faulted",
      timeoutMs: 60_000,
    });
    await cluster.startNode(2);
    // At 16 MiB/s the copy takes seconds: node3 dies again in the middle of it.
    const { attachment: midway } = await waitForAttachment(c1, (a) => {
      const r = a.replicas.find((x) => x.nodeId === "node3");
      return r?.state === "rebuilding" && r.rebuiltBytes > 0;
    });
    const first = midway.replicas.find((r) => r.nodeId === "node3");
    await cluster.kill9(2);
    await waitForAttachment(c1, (a) => a.replicas.find((r) => r.nodeId === "node3")?.state === "faulted");
    await cluster.startNode(2);
    const { attachment: healed } = await waitForAttachment(c1, allHealthy, 60_000);
    await load.stop();
    expect(load.errors).toEqual([]);
    const last = healed.replicas.find((r) => r.nodeId === "node3")?.lastRebuild;
    expect(first?.fullRebuild).toBe(false);
    expect(last?.full).toBe(false);
    console.log(
      `rebuild cut short at ${((first?.rebuiltBytes ?? 0) / MIB).toFixed(0)} of ${((first?.rebuildTotalBytes ?? 0) / MIB).toFixed(0)} MiB; resumed incrementally: ${((last?.bytes ?? 0) / MIB).toFixed(0)} MiB in ${last?.durationMs} ms at --rebuild-rate 16M`,
    );
    await verifyAcked(cluster.nodes[0]?.nbdAddress as string, "db", load);
    await expectReplicasIdentical(cluster, [0, 1, 2], healed.epoch);
  }, 150_000);

  it("a volume attached nowhere with a replica out of sync: once that node is back the leader rebuilds it without any attach, and the replicas are equal again", async (t) => {
    if (!canRun({ root: true, tools: ["etcd", "ip", "losetup"] }, t.task.name)) return t.skip();
    const cluster = await threeNodeCluster();
    const c1 = cluster.client(0);
    await c1.createVolume({ name: "db", sizeBytes: SIZE, replicas: 3 });
    await c1.attachVolume({ name: "db", replicaTimeoutMs: 1000 });
    const front = await NbdTestClient.open(cluster.nodes[0]?.nbdAddress as string, "db");
    expect((await front.write(0, stamp(1))).error).toBe(0);
    await cluster.kill9(2);
    // node3 misses these: it is recorded out of sync before they are acknowledged.
    for (let i = 1; i <= 64; i++) expect((await front.write(i * CHUNK, stamp(100 + i))).error).toBe(0);
    expect((await front.flush()).error).toBe(0);
    await front.disconnect();
    await waitForAttachment(c1, (a) => a.replicas.find((r) => r.nodeId === "node3")?.state === "faulted");
    await c1.detachVolume({ name: "db" });
    expect(await c1.listAttachments({ name: "db" })).toEqual([]);

    // Nobody attaches it again; node3 returns, and the leader's repair brings its replica back in sync.
    const ac = new AbortController();
    const giveUp = setTimeout(() => ac.abort(), 30_000); // the watch ends, and the test fails below
    // From the start of the history, not from now: a watch opened now is live only some time after
    // the call returns, and a repair done before then would be missed. node3 back in sync is the
    // first volume event naming it in sync after one that did not.
    const watch = c1.watch({ volume: "db", after: HISTORY_START, signal: ac.signal })[Symbol.asyncIterator]();
    const startedAt = Date.now();
    await cluster.startNode(2);
    let outOfSync = false;
    let next = await watch.next();
    for (; !next.done; next = await watch.next()) {
      if (next.value.kind !== "volume") continue;
      if (!next.value.inSync.includes("node3")) outOfSync = true;
      else if (outOfSync) break;
    }
    const repairedMs = Date.now() - startedAt;
    expect(next.done, "node3 back in sync").toBe(false);
    console.log(`volume attached nowhere: node3 back in sync ${repairedMs} ms after its restart, with no attach`);
    // On a loaded machine the repair's last flush may time out on another replica, which is then
    // recorded out of sync and repaired in turn: wait until all three are in sync and stay so for 2 s.
    const seen = next.value as KeelsonEvent;
    let allInSync = seen.kind === "volume" && seen.inSync.length === 3;
    let settled = false;
    let pending = watch.next();
    while (!settled) {
      let timer: NodeJS.Timeout | undefined;
      const quiet = new Promise<"quiet">((r) => {
        timer = setTimeout(() => r("quiet"), 2_000);
      });
      const got = await Promise.race([pending, quiet]);
      clearTimeout(timer);
      if (got === "quiet") {
        settled = allInSync;
        continue;
      }
      if (got.done) break; // gave up: the assertion below fails
      if (got.value.kind === "volume") allInSync = got.value.inSync.length === 3;
      pending = watch.next();
    }
    clearTimeout(giveUp);
    ac.abort();
    await watch.return(undefined);
    expect(settled, "all three replicas in sync, and staying so").toBe(true);

    // The repair detached cleanly: a reader attaches at its epoch with nothing to resync, and every replica is equal.
    const reader = await cluster.client(1).attachVolume({ name: "db", readOnly: true });
    expect(reader.replicas.filter((r) => r.state !== "healthy")).toEqual([]);
    await expectReplicasIdentical(cluster, [0, 1, 2], reader.epoch);
    const image = await readAll(cluster.nodes[1]?.nbdAddress as string, "db");
    expect(image.readBigUInt64BE(64 * CHUNK)).toBe(164n);
  }, 120_000);

  it("partitioned frontend, volume attached elsewhere, partition healed: the old frontend gets no write acknowledged after the new epoch, and the data is what the new frontend acknowledged", async (t) => {
    if (!canRun({ root: true, tools: ["etcd", "ip", "losetup"] }, t.task.name)) return t.skip();
    const cluster = await threeNodeCluster();
    await cluster.client(0).createVolume({ name: "db", sizeBytes: SIZE, replicas: 3 });
    await cluster.client(0).attachVolume({ name: "db", replicaTimeoutMs: 1000 });
    const n0 = cluster.nodes[0] as (typeof cluster.nodes)[number];
    expect(await writeOnNode(n0.nbdSocket, 0, 1)).toBe("ok");
    await cluster.partition(0);
    // Cut off from the other replicas and from etcd, the old frontend acknowledges nothing.
    const cutOff = await writeOnNode(n0.nbdSocket, CHUNK, 2);
    expect(cutOff).not.toBe("ok");
    const att = await cluster
      .client(1)
      .attachVolume({ name: "db", replicaTimeoutMs: 1000, takeover: true }, { timeoutMs: 15_000 });
    expect(att.epoch).toBe(2);
    const fresh = await NbdTestClient.open(cluster.nodes[1]?.nbdAddress as string, "db");
    expect((await fresh.write(2 * CHUNK, stamp(3))).error).toBe(0);
    await cluster.heal(0);
    // Healed once node1 reaches etcd again (its lease lapsed while cut off; it is alive again once renewed).
    await waitFor(async () => (await cluster.client(1).listNodes()).find((n) => n.nodeId === "node1")?.alive, {
      what: "node1 alive again after the heal",
      timeoutMs: 30_000,
    });
    // Healed, the old frontend still gets nothing acknowledged: it learns it was fenced.
    const late: string[] = [];
    for (let i = 0; i < 3; i++) late.push(await writeOnNode(n0.nbdSocket, 3 * CHUNK, 100 + i));
    console.log(`old frontend: while cut off ${cutOff}; after heal ${late.join(", ")}`);
    expect(late.every((e) => e !== "ok")).toBe(true);
    const image = await readAll(cluster.nodes[1]?.nbdAddress as string, "db");
    fresh.close();
    expect(image.readBigUInt64BE(0)).toBe(1n);
    expect(image.readBigUInt64BE(2 * CHUNK)).toBe(3n);
    expect(image.readBigUInt64BE(CHUNK)).toBe(0n); // the write made while cut off was not acknowledged and is not there
    expect(image.readBigUInt64BE(3 * CHUNK)).toBe(0n); // none of the old frontend's late writes landed
  }, 120_000);
  it("leader killed -9 together with a replica: another engine leads, places the lost replica on a spare node, and the frontend rebuilds it there under load; the stale copy is deleted when its node returns", async (t) => {
    if (!canRun({ root: true, tools: ["etcd", "ip", "losetup"] }, t.task.name)) return t.skip();
    const dir = path.join(os.tmpdir(), `keelson-repl-${process.pid}-${Date.now()}`);
    const cluster = track(
      await LocalCluster.start({
        nodes: 4,
        dir,
        diskSizeBytes: 512 * MIB,
        leaseTtlS: 2,
        keelsondArgs: ["--replace-replica-after", "2"],
      }),
    );
    const leaderId = (await cluster.client(0).listNodes()).find((n) => n.leader)?.nodeId;
    expect(leaderId).toBeTruthy();
    const front = cluster.nodes.findIndex((n) => n.nodeId !== leaderId);
    const frontId = cluster.nodes[front]?.nodeId as string;
    const fc = cluster.client(front);
    await fc.createVolume({ name: "db", sizeBytes: SIZE, replicas: 2 });
    const att = await fc.attachVolume({ name: "db", replicaTimeoutMs: 1000 });
    const otherHolder = att.replicas.map((r) => r.nodeId).find((id) => id !== frontId) as string;
    const victims = [...new Set([leaderId as string, otherHolder])];
    const load = workload(cluster.nodes[front]?.nbdAddress as string, "db");
    await waitFor(() => load.lastAcked.size >= ACKED_BEFORE_KILL, {
      what: `${ACKED_BEFORE_KILL} chunks acknowledged`,
      timeoutMs: 30_000,
    });
    const killedAt = Date.now();
    for (const id of victims) await cluster.kill9(cluster.nodes.findIndex((n) => n.nodeId === id));
    const { attachment } = await waitForAttachment(
      fc,
      (a) => allHealthy(a) && a.replicas.length === 2 && !a.replicas.some((r) => victims.includes(r.nodeId)),
      60_000,
    );
    const repairedMs = Date.now() - killedAt;
    await load.stop();
    expect(load.errors).toEqual([]);
    const newLeader = (await fc.listNodes()).find((n) => n.leader)?.nodeId;
    expect(newLeader).toBeTruthy();
    expect(newLeader).not.toBe(leaderId);
    // The replica the leader placed: on a node that held none before (which one depends on where the first two went).
    const placed = attachment.replicas.find((r) => !att.replicas.some((o) => o.nodeId === r.nodeId));
    expect(placed?.lastRebuild?.full).toBe(true);
    console.log(
      `${victims.join(" and ")} killed (leader ${leaderId}, replica ${otherHolder}): ${newLeader} leads, replica placed on ${placed?.nodeId} and rebuilt (${((placed?.lastRebuild?.bytes ?? 0) / MIB).toFixed(0)} MiB in ${placed?.lastRebuild?.durationMs} ms); healthy ${repairedMs} ms after the kill (node down after the lease TTL 2 s, replaced after 2 s more) while ${load.writes()} writes went on`,
    );
    await verifyAcked(cluster.nodes[front]?.nbdAddress as string, "db", load);
    const holders = attachment.replicas.map((r) => cluster.nodes.findIndex((n) => n.nodeId === r.nodeId));
    await expectReplicasIdentical(cluster, holders, attachment.epoch);
    // The replaced replica's node returns: the leader deletes the stale copy left there.
    const stale = cluster.nodes.findIndex((n) => n.nodeId === otherHolder);
    await cluster.startNode(stale);
    const sc = cluster.client(stale);
    const deadline = Date.now() + 20_000;
    let gone = false;
    while (!gone && Date.now() < deadline) {
      // A node without a replica still reports the volume (from its record), with no local uid.
      gone = await sc.getVolume({ name: "db" }).then(
        (v) => v.uid === "",
        (e: unknown) => isKeelsonError(e, "VOLUME_NOT_FOUND"),
      );
      if (!gone) await new Promise((r) => setTimeout(r, 200));
    }
    expect(gone, `stale copy of db on ${otherHolder} removed`).toBe(true);
  }, 150_000);
});
