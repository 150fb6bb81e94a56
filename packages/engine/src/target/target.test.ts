import fs from "node:fs";
import os from "node:os";
import path from "node:path";
import { isKeelsonError, type KeelsonError } from "@keelson/sdk";
import { afterEach, beforeEach, describe, expect, it } from "vitest";
import type { NbdExport, NbdPeer } from "../nbd/export.js";
import { NbdServer } from "../nbd/server.js";
import { admitReservation } from "../qos/admission.js";
import { defaultPolicy, type QosPolicy } from "../qos/policy.js";
import { QosManager } from "../qos/qos-manager.js";
import { ReplicatedVolume } from "../replication/replicated-volume.js";
import { Pool } from "../store/pool.js";
import { readVolume } from "../store/volume-io.js";
import { openLocalReplica, TargetCatalog } from "./catalog.js";
import { type ReplicaAuthority, ReplicaCatalog } from "./replica-catalog.js";
import { VolumeTarget } from "./volume-target.js";

const MIB = 1024 * 1024;
const BLOCK = 4096;
let dir: string;
/** Closed after each test, last opened first. */
let cleanups: Array<() => Promise<void> | void> = [];

beforeEach(() => {
  dir = fs.mkdtempSync(path.join(os.tmpdir(), "keelson-target-"));
});
afterEach(async () => {
  for (const c of cleanups.reverse()) await c();
  cleanups = [];
  fs.rmSync(dir, { recursive: true, force: true });
});

async function openPool(name: string): Promise<Pool> {
  const pool = await Pool.open({ admit: admitReservation, path: path.join(dir, `${name}.img`), createSizeBytes: 64 * MIB });
  cleanups.push(() => pool.close());
  return pool;
}

function run(start: (cb: (e: KeelsonError | null) => void) => void): Promise<void> {
  return new Promise((resolve, reject) => start((e) => (e ? reject(e) : resolve())));
}
const write = (t: NbdExport, offset: number, data: Buffer) => run((cb) => t.write(offset, data, false, cb));
async function read(t: NbdExport, offset: number, length: number): Promise<Buffer> {
  const buf = Buffer.alloc(length, 0xee);
  await run((cb) => t.read(offset, length, buf, 0, cb));
  return buf;
}
function errorOf(p: Promise<unknown>): Promise<unknown> {
  return p.then(
    () => null,
    (e: unknown) => e,
  );
}
function pattern(seed: number, length = BLOCK): Buffer {
  return Buffer.alloc(length, seed & 0xff);
}
/** A policy that lets `writeIops` writes a second through, one at a time. */
function writeLimit(writeIops: number): QosPolicy {
  return { ...defaultPolicy(), limits: { writeIops: { rate: writeIops, burst: 1 } } };
}

/** A client on the engine's unix socket. */
const UNIX: NbdPeer = { via: "unix", address: "", subject: null };

describe("local targets", () => {
  it("a volume's target writes and reads back the same bytes, counts its handle, and is one VolumeTarget type", async () => {
    const pool = await openPool("p");
    const v = await pool.createVolume({ name: "v", sizeBytes: 4 * MIB });
    const catalog = new TargetCatalog(pool, new QosManager(32));
    const t = catalog.open("v");
    if (!t) throw new Error("no target v");
    expect(t).toBeInstanceOf(VolumeTarget);
    expect(v.openHandles).toBe(1);
    await write(t, 8 * BLOCK, pattern(7));
    expect(await read(t, 8 * BLOCK, BLOCK)).toEqual(pattern(7));
    t.close();
    t.close();
    expect(v.openHandles).toBe(0);
  });

  it("epoch fence: a handle opened under an older epoch is refused with EPOCH_STALE once the volume is fenced past it", async () => {
    const pool = await openPool("p");
    await pool.createVolume({ name: "v", sizeBytes: 4 * MIB });
    const catalog = new TargetCatalog(pool);
    const old = openLocalReplica(pool, null, "v#3");
    if (!old) throw new Error("no target v#3");
    await write(old, 0, pattern(1));
    await pool.fenceVolume("v", 5);
    const error = await errorOf(write(old, 0, pattern(2)));
    expect(isKeelsonError(error, "EPOCH_STALE")).toBe(true);
    expect(isKeelsonError(await errorOf(read(old, 0, BLOCK)), "EPOCH_STALE")).toBe(true);
    old.close();
    // Not opened at all under a stale epoch, neither by name nor as a frontend's local replica.
    expect(catalog.forClient(UNIX).open("v#4")).toBeNull();
    expect(openLocalReplica(pool, null, "v#4")).toBeNull();
    const current = openLocalReplica(pool, null, "v#5");
    if (!current) throw new Error("no local replica v#5");
    expect(await read(current, 0, BLOCK)).toEqual(pattern(1));
    current.close();
  });

  it("an application never writes a replica: no VOLUME#EPOCH over TCP, a fenced volume not by its name, and read-only inspection on the unix socket", async () => {
    const pool = await openPool("p");
    await pool.createVolume({ name: "plain", sizeBytes: 4 * MIB });
    await pool.createVolume({ name: "r", sizeBytes: 4 * MIB, labels: { "keelson.io/replica-of": "r" } });
    await pool.createVolume({ name: "fenced", sizeBytes: 4 * MIB });
    await pool.fenceVolume("fenced", 2);
    await pool.createSnapshot({ volumeName: "plain", name: "s1" });
    await pool.createSnapshot({ volumeName: "r", name: "s1" });
    const catalog = new TargetCatalog(pool);
    const tcp = catalog.forClient({ via: "tcp", address: "127.0.0.1", subject: null });
    expect((await tcp.list()).map((e) => e.name)).toEqual(["plain", "plain@s1"]);
    for (const name of ["r", "fenced", "fenced#2", "fenced#99", "r#1", "plain#1"]) {
      expect(await tcp.open(name), name).toBeNull();
      expect(await tcp.describe(name), name).toBeNull();
    }
    const plain = await tcp.open("plain");
    expect(plain?.readOnly).toBe(false);
    plain?.close();
    const unix = catalog.forClient(UNIX);
    expect(await unix.open("fenced#1")).toBeNull();
    const inspect = await unix.open("fenced#2");
    if (!inspect) throw new Error("no inspection of fenced#2");
    expect(inspect.readOnly).toBe(true);
    expect(inspect.saveActivity).toBeUndefined();
    expect(await read(inspect, 0, BLOCK)).toEqual(Buffer.alloc(BLOCK));
    inspect.close();
    expect((await unix.describe("r#1"))?.readOnly).toBe(true);
  });

  it("a snapshot's target is read-only: writes fail with READ_ONLY and the bytes stay the snapshot's", async () => {
    const pool = await openPool("p");
    const v = await pool.createVolume({ name: "v", sizeBytes: 4 * MIB });
    const catalog = new TargetCatalog(pool);
    const t = catalog.open("v");
    if (!t) throw new Error("no target v");
    await write(t, 0, pattern(3));
    await pool.createSnapshot({ volumeName: "v", name: "s1" });
    await write(t, 0, pattern(4));
    t.close();
    const snap = catalog.open("v@s1");
    if (!snap) throw new Error("no target v@s1");
    expect(snap.readOnly).toBe(true);
    expect(isKeelsonError(await errorOf(write(snap, 0, pattern(5))), "READ_ONLY")).toBe(true);
    expect(await read(snap, 0, BLOCK)).toEqual(pattern(3));
    snap.close();
    expect(v.openHandles).toBe(0);
  });

  it("QoS stage: a volume's write limit delays its writes, and its state counts them", async () => {
    const pool = await openPool("p");
    const v = await pool.createVolume({ name: "v", sizeBytes: 4 * MIB });
    const qos = new QosManager(32);
    qos.apply(v.record.uid, writeLimit(20));
    const t = new TargetCatalog(pool, qos).open("v");
    if (!t) throw new Error("no target v");
    const started = Date.now();
    await Promise.all(Array.from({ length: 6 }, (_, i) => write(t, i * BLOCK, pattern(i + 1))));
    // 6 writes at 20/s with a burst of 1: the last passes 5 x 50 ms after the first.
    expect(Date.now() - started).toBeGreaterThanOrEqual(200);
    expect(qos.status(v.record.uid).delayedIos).toBeGreaterThan(0);
    for (let i = 0; i < 6; i++) expect(await read(t, i * BLOCK, BLOCK)).toEqual(pattern(i + 1));
    t.close();
  });
});

describe("replicated targets", () => {
  /**
   * A replicated volume "rv" with two replicas over real local stores: node
   * a's in-process (through the injected local replica path), node b's over
   * NBD on loopback, as a peer's would be.
   */
  async function replicated(
    queueDepth = 32,
  ): Promise<{ rv: ReplicatedVolume; catalog: TargetCatalog<ReplicatedVolume>; poolA: Pool; poolB: Pool; qosA: QosManager }> {
    const poolA = await openPool("a");
    const poolB = await openPool("b");
    await poolA.createVolume({ name: "rv", sizeBytes: 4 * MIB });
    await poolB.createVolume({ name: "rv", sizeBytes: 4 * MIB });
    // As an attach does: every replica fenced at the frontend's epoch first (its log is kept only then).
    await poolA.fenceVolume("rv", 1);
    await poolB.fenceVolume("rv", 1);
    const qosA = new QosManager(queueDepth);
    // As the engine does at start for every volume of its pool: the replica's own QoS state.
    qosA.apply(poolA.getVolume("rv").record.uid, defaultPolicy());
    // Node b's replica listener; the cluster's authority (etcd) is stood in for by one that lets a write.
    const authority: ReplicaAuthority = { grant: async () => "write", isNode: async () => undefined };
    const serverB = new NbdServer(new ReplicaCatalog(poolB, new QosManager(32), authority).forClient);
    await serverB.listen({ tcp: "127.0.0.1:0" });
    cleanups.push(() => serverB.close());
    const rv = await ReplicatedVolume.open(
      "rv",
      1,
      [
        { nodeId: "a", replicaAddress: "", inSync: true },
        { nodeId: "b", replicaAddress: serverB.tcpAddress, inSync: true },
      ],
      "a",
      { openLocal: (name) => openLocalReplica(poolA, qosA, name) },
    );
    cleanups.push(() => rv.close());
    const catalog = new TargetCatalog<ReplicatedVolume>(poolA, qosA);
    catalog.frontends.set("rv", rv);
    return { rv, catalog, poolA, poolB, qosA };
  }

  it("a read through the frontend lands in the connection's buffer at its offset, read there by the replica (no buffer of its own)", async () => {
    const { rv, catalog } = await replicated();
    const t = catalog.open("rv");
    if (!t) throw new Error("no target rv");
    await write(t, 3 * BLOCK, pattern(0x61, 2 * BLOCK));
    const intos: Buffer[] = [];
    const plain = rv.read.bind(rv);
    rv.read = (offset, length, into) => {
      if (into) intos.push(into);
      return plain(offset, length, into);
    };
    const reply = Buffer.alloc(100 + 2 * BLOCK + 100, 0xee);
    await run((cb) => t.read(3 * BLOCK, 2 * BLOCK, reply, 100, cb));
    expect(reply.subarray(100, 100 + 2 * BLOCK)).toEqual(pattern(0x61, 2 * BLOCK));
    expect(reply.subarray(0, 100)).toEqual(Buffer.alloc(100, 0xee));
    expect(reply.subarray(100 + 2 * BLOCK)).toEqual(Buffer.alloc(100, 0xee));
    expect(intos.length).toBe(1);
    expect(intos[0]?.buffer).toBe(reply.buffer);
    expect(intos[0]?.byteOffset).toBe(reply.byteOffset + 100);
    t.close();
  });

  it("a policy applied to a replicated volume throttles its frontend's writes, on a connection already open; both replicas hold the bytes", async () => {
    const { rv, catalog, poolB } = await replicated();
    const t = catalog.open("rv");
    if (!t) throw new Error("no target rv");
    expect(t).toBeInstanceOf(VolumeTarget);
    expect(rv.openHandles).toBe(1);
    expect(rv.status().map((r) => r.state)).toEqual(["healthy", "healthy"]);
    // No policy yet: nothing is delayed.
    await Promise.all(Array.from({ length: 6 }, (_, i) => write(t, i * BLOCK, pattern(i + 1))));
    expect(catalog.qosStatus("rv").delayedIos).toBe(0);
    catalog.applyQos("rv", writeLimit(20));
    const started = Date.now();
    await Promise.all(Array.from({ length: 6 }, (_, i) => write(t, (16 + i) * BLOCK, pattern(i + 101))));
    const elapsedMs = Date.now() - started;
    // 6 writes at 20/s with a burst of 1: the last passes 5 x 50 ms after the first.
    expect(elapsedMs).toBeGreaterThanOrEqual(200);
    expect(catalog.qosStatus("rv").delayedIos).toBeGreaterThan(0);
    for (let i = 0; i < 6; i++) expect(await read(t, (16 + i) * BLOCK, BLOCK)).toEqual(pattern(i + 101));
    // The peer's replica holds what was acknowledged.
    const onB = Buffer.alloc(BLOCK);
    await run((cb) => readVolume(poolB, poolB.getVolume("rv"), 21 * BLOCK, BLOCK, onB, 0, cb));
    expect(onB).toEqual(pattern(106));
    t.close();
    expect(rv.openHandles).toBe(0);
    // Once the policy is lifted, nothing more is delayed.
    catalog.applyQos("rv", defaultPolicy());
    const delayed = catalog.qosStatus("rv").delayedIos;
    const again = catalog.open("rv");
    if (!again) throw new Error("no target rv");
    await Promise.all(Array.from({ length: 6 }, (_, i) => write(again, (32 + i) * BLOCK, pattern(i + 201))));
    expect(catalog.qosStatus("rv").delayedIos).toBe(delayed);
    again.close();
    catalog.removeQos("rv");
  });

  it("a limited replicated volume takes no disk slot for its fan-out: with one slot and a reservation on the node, its writes complete and its own replica stays healthy", async () => {
    const { rv, catalog, qosA } = await replicated(1);
    // Any reservation on the node engages the disk scheduler for every local volume, the frontend's own replica too.
    qosA.apply("some-reserved-volume", { ...defaultPolicy(), reservationIops: 100 });
    catalog.applyQos("rv", writeLimit(1000));
    const t = catalog.open("rv");
    if (!t) throw new Error("no target rv");
    await Promise.all(Array.from({ length: 4 }, (_, i) => write(t, i * BLOCK, pattern(i + 301))));
    expect(rv.status().map((r) => r.state)).toEqual(["healthy", "healthy"]);
    for (let i = 0; i < 4; i++) expect(await read(t, i * BLOCK, BLOCK)).toEqual(pattern(i + 301));
    t.close();
  });

  it("a request every replica refuses (out of range) fails with the replicas' own code and faults none of them; the volume goes on", async () => {
    const { rv } = await replicated();
    const error = await rv.write(4 * MIB, pattern(7), false).then(
      () => null,
      (e: unknown) => e,
    );
    expect(isKeelsonError(error, "OUT_OF_RANGE")).toBe(true);
    expect(rv.status().map((r) => r.state)).toEqual(["healthy", "healthy"]);
    await rv.write(0, pattern(8), false);
    expect((await rv.read(0, BLOCK)).equals(pattern(8))).toBe(true);
  });

  it("a replicated volume takes limits only: a reservation or a weight is refused with INVALID_ARGUMENT and changes nothing", async () => {
    const { catalog } = await replicated();
    const reserving = { ...defaultPolicy(), reservationIops: 100 };
    const weighted = { ...defaultPolicy(), weight: 5 };
    for (const policy of [reserving, weighted]) {
      let error: unknown = null;
      try {
        catalog.applyQos("rv", policy);
      } catch (e) {
        error = e;
      }
      expect(isKeelsonError(error, "INVALID_ARGUMENT")).toBe(true);
    }
    expect(catalog.qosStatus("rv")).toEqual({
      throttledMs: 0,
      delayedIos: 0,
      queuedIos: 0,
      servedByReservation: 0,
      servedByWeight: 0,
    });
  });

  it("a replicated volume's policy does not touch a local volume's QoS state, nor the reverse", async () => {
    const { catalog, poolA, qosA } = await replicated();
    catalog.applyQos("rv", writeLimit(20));
    const local = openLocalReplica(poolA, qosA, "rv#1");
    if (!local) throw new Error("no local target rv#1");
    expect(local).toBeInstanceOf(VolumeTarget);
    // The local replica volume "rv" has no policy of its own here: writes to it are not delayed.
    await Promise.all(Array.from({ length: 6 }, (_, i) => write(local, i * BLOCK, pattern(i + 1))));
    expect(catalog.qosStatus("rv").delayedIos).toBe(0);
    local.close();
  });
});
