import { spawn } from "node:child_process";
import path from "node:path";
import { isKeelsonError } from "@keelson/sdk";
import { describe, expect, it } from "vitest";
import { seededRandom, testSeed } from "../src/testing/random.js";
import { startDaemon, tempDir } from "./helpers/daemon.js";
import { canRun } from "./helpers/env.js";
import { NbdTestClient } from "./helpers/nbd-client.js";
import { run } from "./helpers/process.js";
import { waitFor } from "./helpers/wait.js";

const MIB = 1024 * 1024;
const GIB = 1024 * MIB;
const BLOCK = 4096;
const ENOSPC = 28;

function median(xs: number[]): number {
  const s = [...xs].sort((a, b) => a - b);
  return s[Math.floor(s.length / 2)] as number;
}

/** fio over NBD: sequential writes of random data (no zero detection can skip them). */
async function fioFill(uri: string, sizeBytes: number): Promise<void> {
  await run(
    "fio",
    [
      "--name=fill",
      "--ioengine=nbd",
      `--uri=${uri}`,
      "--rw=write",
      "--bs=1M",
      "--iodepth=8",
      `--size=${sizeBytes}`,
      "--end_fsync=1",
    ],
    { timeoutMs: 300_000 },
  );
}

describe("snapshots", () => {
  it("snapshot creation is O(1): median time on a full 4 GiB volume within 2x of a full 64 MiB one", async (t) => {
    if (!canRun({ tools: ["fio"] }, t.task.name)) return t.skip();
    using dir = tempDir("keelson-snap-o1-");
    await using d = await startDaemon({ poolPath: path.join(dir.path, "pool.img"), poolSize: "4600M", dir: dir.path });
    const client = d.client();
    const sizes = { small: 64 * MIB, large: 4 * GIB };
    for (const [name, sizeBytes] of Object.entries(sizes)) {
      await client.createVolume({ name, sizeBytes });
      await fioFill(d.uri(name), sizeBytes);
      expect((await client.getVolume({ name })).allocatedBytes).toBe(sizeBytes);
    }
    // Interleaved, so whatever else this machine runs meanwhile weighs on both sizes alike.
    const times: Record<string, number[]> = { small: [], large: [] };
    for (let i = 0; i < 20; i++) {
      for (const name of Object.keys(sizes)) {
        const started = process.hrtime.bigint();
        await client.createSnapshot({ volume: name, name: `s${i}` });
        times[name]?.push(Number(process.hrtime.bigint() - started) / 1e6);
      }
    }
    const medians = { small: median(times.small ?? []), large: median(times.large ?? []) };
    const ratio = (medians.large as number) / (medians.small as number);
    console.log(
      `snapshot create median of 20: 64 MiB ${medians.small?.toFixed(2)} ms, 4 GiB ${medians.large?.toFixed(2)} ms, ratio ${ratio.toFixed(2)}`,
    );
    expect(ratio).toBeLessThan(2);
    expect(ratio).toBeGreaterThan(0.5);
  }, 600_000);

  // Crash consistency as a client can observe it across two connections: writes
  // acknowledged before the call began are in the snapshot, writes sent after it
  // returned are not, writes overlapping the call are wholly in or wholly out.
  it("snapshot taken mid-workload: writes acknowledged before the call are in it, later ones are not, none is torn", async () => {
    const seed = testSeed();
    console.log(`snapshot point-in-time seed=${seed}`);
    const rand = seededRandom(seed);
    using dir = tempDir("keelson-snap-pit-");
    await using d = await startDaemon({ poolPath: path.join(dir.path, "pool.img"), poolSize: "256M", dir: dir.path });
    const client = d.client();
    const CHUNK = 4 * BLOCK;
    const WORKERS = 4;
    const CHUNKS_PER_WORKER = 256;
    await client.createVolume({ name: "busy", sizeBytes: WORKERS * CHUNKS_PER_WORKER * CHUNK });
    // Each worker owns its chunks and writes them one at a time, so writes to one chunk are totally ordered.
    const history = new Map<number, Array<{ id: number; sentAt: number; ackedAt: number }>>();
    let clock = 0;
    let nextId = 1;
    let stop = false;
    let callBegan = Number.POSITIVE_INFINITY;
    let callReturned = Number.POSITIVE_INFINITY;
    /** Writes acknowledged so far: the call is made with writes behind it, and returns with writes still going. */
    let acked = 0;
    const worker = async (w: number): Promise<void> => {
      const c = await NbdTestClient.open(d.nbdAddress, "busy");
      while (!stop) {
        const chunk = w * CHUNKS_PER_WORKER + Math.floor(rand() * CHUNKS_PER_WORKER);
        const id = nextId++;
        const data = Buffer.alloc(CHUNK);
        for (let at = 0; at < CHUNK; at += 8) data.writeBigUInt64BE(BigInt(id), at);
        const rec = { id, sentAt: ++clock, ackedAt: Number.POSITIVE_INFINITY };
        const list = history.get(chunk) ?? [];
        list.push(rec);
        history.set(chunk, list);
        const r = await c.write(chunk * CHUNK, data);
        expect(r.error).toBe(0);
        rec.ackedAt = ++clock;
        acked++;
      }
      await c.disconnect();
    };
    const workers = Array.from({ length: WORKERS }, (_, w) => worker(w));
    await waitFor(() => acked >= 16 * WORKERS, { what: "writes acknowledged before the snapshot", timeoutMs: 30_000 });
    callBegan = ++clock;
    await client.createSnapshot({ volume: "busy", name: "mid" });
    callReturned = ++clock;
    const ackedAtReturn = acked;
    await waitFor(() => acked >= ackedAtReturn + 4 * WORKERS, {
      what: "writes acknowledged after the snapshot",
      timeoutMs: 30_000,
    });
    stop = true;
    await Promise.all(workers);

    const snap = await NbdTestClient.open(d.nbdAddress, "busy@mid");
    const image = (await snap.read(0, WORKERS * CHUNKS_PER_WORKER * CHUNK)).data;
    await snap.disconnect();
    let inFlightTaken = 0;
    let after = 0;
    for (let chunk = 0; chunk < WORKERS * CHUNKS_PER_WORKER; chunk++) {
      const bytes = image.subarray(chunk * CHUNK, (chunk + 1) * CHUNK);
      const id = Number(bytes.readBigUInt64BE(0));
      for (let at = 8; at < CHUNK; at += 8) expect(Number(bytes.readBigUInt64BE(at)), `chunk ${chunk} torn`).toBe(id);
      const writes = history.get(chunk) ?? [];
      const lastAcked = writes.filter((w) => w.ackedAt < callBegan).at(-1);
      const overlapping = writes.filter((w) => w.sentAt < callReturned && w.ackedAt > callBegan);
      const allowed = new Set([lastAcked?.id ?? 0, ...overlapping.map((w) => w.id)]);
      expect(
        allowed.has(id),
        `chunk ${chunk} holds write ${id}; allowed ${[...allowed].join(", ")}; began ${callBegan} returned ${callReturned}; ${JSON.stringify(writes.slice(-4))}`,
      ).toBe(true);
      if (overlapping.some((w) => w.id === id)) inFlightTaken++;
      if (writes.some((w) => w.sentAt > callBegan)) after++;
    }
    console.log(
      `point-in-time: ${nextId - 1} writes, ${after} chunks written after the call began, ${inFlightTaken} writes overlapping the call captured`,
    );
    expect(after).toBeGreaterThan(0);
  }, 120_000);

  it("fio verify on a clone of a snapshot taken mid-workload passes for the data written before it; clone and source stay independent", async (t) => {
    if (!canRun({ tools: ["fio", "nbdinfo"] }, t.task.name)) return t.skip();
    using dir = tempDir("keelson-snap-fio-");
    await using d = await startDaemon({ poolPath: path.join(dir.path, "pool.img"), poolSize: "1G", dir: dir.path });
    const client = d.client();
    await client.createVolume({ name: "db", sizeBytes: 128 * MIB });
    const fio = (uri: string, args: string[]) =>
      run("fio", ["--name=job", "--ioengine=nbd", `--uri=${uri}`, "--iodepth=16", ...args], { timeoutMs: 120_000 });
    // Region A [0, 64 MiB): written with verify headers before the snapshot.
    const regionA = ["--offset=0", "--size=64M", "--bs=64k", "--verify=crc32c", "--verify_pattern=0x5eed"];
    const overwriteA = ["--offset=0", "--size=64M", "--bs=1M", "--verify=crc32c", "--verify_pattern=0xdead"];
    await fio(d.uri("db"), ["--rw=randwrite", "--do_verify=0", ...regionA]);
    // Region B [64, 128 MiB): a random-write workload running while the snapshot is taken.
    const workload = spawn("fio", [
      "--name=load",
      "--ioengine=nbd",
      `--uri=${d.uri("db")}`,
      "--rw=randwrite",
      "--bs=4k",
      "--iodepth=32",
      "--offset=64M",
      "--size=64M",
      "--time_based",
      "--runtime=30",
    ]);
    try {
      await new Promise((r) => setTimeout(r, 1500));
      await client.createSnapshot({ volume: "db", name: "mid" });
      // The source keeps changing after the snapshot: region A is overwritten with other data.
      await fio(d.uri("db"), ["--rw=write", "--do_verify=0", ...overwriteA]);
    } finally {
      workload.kill("SIGTERM");
      await new Promise((r) => workload.once("close", r));
    }
    const clone = await client.createVolume({
      name: "db-clone",
      sizeBytes: 0,
      source: { snapshot: { volume: "db", name: "mid" } },
    });
    expect(clone.sizeBytes).toBe(128 * MIB);
    await fio(d.uri("db-clone"), ["--rw=randwrite", "--verify_only", ...regionA]);
    await fio(d.uri("db@mid"), ["--rw=randwrite", "--verify_only", ...regionA]);
    // Writes to the clone do not show in the snapshot or the source, and the clone keeps what it wrote.
    await fio(d.uri("db-clone"), [
      "--rw=write",
      "--bs=1M",
      "--offset=0",
      "--size=8M",
      "--verify=crc32c",
      "--verify_pattern=0xc10e",
    ]);
    await fio(d.uri("db@mid"), ["--rw=randwrite", "--verify_only", ...regionA]);
    await fio(d.uri("db"), ["--rw=write", "--verify_only", ...overwriteA]);
    await fio(d.uri("db-clone"), [
      "--rw=write",
      "--verify_only",
      "--offset=0",
      "--size=8M",
      "--bs=1M",
      "--verify=crc32c",
      "--verify_pattern=0xc10e",
    ]);
    // Online expansion: the clone grows while exported; a client that reconnects sees the new size.
    const connected = await NbdTestClient.open(d.nbdAddress, "db-clone");
    await client.resizeVolume({ name: "db-clone", sizeBytes: 256 * MIB });
    const size = await run("nbdinfo", ["--size", d.uri("db-clone")]);
    expect(Number(size.stdout.trim())).toBe(256 * MIB);
    await connected.disconnect();
    const shrink = await client.resizeVolume({ name: "db-clone", sizeBytes: 64 * MIB }).catch((e: unknown) => e);
    expect(isKeelsonError(shrink, "SHRINK_NOT_SUPPORTED")).toBe(true);
  }, 300_000);

  it("snapshots deleted while fio verifies on the volume: I/O continues and stays correct, other snapshots read unchanged", async (t) => {
    if (!canRun({ tools: ["fio"] }, t.task.name)) return t.skip();
    using dir = tempDir("keelson-snap-fold-");
    await using d = await startDaemon({ poolPath: path.join(dir.path, "pool.img"), poolSize: "1G", dir: dir.path });
    const client = d.client();
    const SIZE = 64 * MIB;
    await client.createVolume({ name: "live", sizeBytes: SIZE });
    /** Blocks tagged "P1"/"P2" + block number, so fio's own blocks (magic 0xacca) are told apart. */
    const pattern = (tag: string, from: number, to: number): Buffer => {
      const b = Buffer.alloc(to - from);
      for (let at = 0; at < b.length; at += BLOCK) {
        b.write(tag, at, "ascii");
        b.writeUInt32BE((from + at) / BLOCK, at + 4);
        b.fill(tag.charCodeAt(1), at + 8, at + BLOCK);
      }
      return b;
    };
    const c = await NbdTestClient.open(d.nbdAddress, "live");
    const fill = async (tag: string, to: number): Promise<void> => {
      for (let at = 0; at < to; at += 16 * MIB) expect((await c.write(at, pattern(tag, at, at + 16 * MIB))).error).toBe(0);
    };
    await fill("P1", SIZE);
    await client.createSnapshot({ volume: "live", name: "s1" });
    await fill("P2", SIZE / 2);
    await client.createSnapshot({ volume: "live", name: "s2" });
    // One block in each extent above fio's 16 MiB: the head then holds part of every extent,
    // so folding s2 into it must copy the rest of each.
    const s2Expected = Buffer.concat([pattern("P2", 0, SIZE / 2), pattern("P1", SIZE / 2, SIZE)]);
    const headExpected = Buffer.from(s2Expected);
    for (let at = 16 * MIB; at < SIZE; at += MIB) {
      const block = pattern("P3", at, at + BLOCK);
      expect((await c.write(at, block)).error).toBe(0);
      block.copy(headExpected, at);
    }
    await c.disconnect();
    const readSnapshot = async (name: string): Promise<Buffer> => {
      const r = await NbdTestClient.open(d.nbdAddress, name);
      const parts: Buffer[] = [];
      for (let at = 0; at < SIZE; at += 16 * MIB) parts.push((await r.read(at, 16 * MIB)).data);
      await r.disconnect();
      return Buffer.concat(parts);
    };
    const fio = run(
      "fio",
      ["--name=live", "--ioengine=nbd", `--uri=${d.uri("live")}`, "--rw=randwrite", "--bs=4k", "--iodepth=16"].concat([
        "--size=16M",
        "--verify=crc32c",
        "--verify_backlog=512",
        "--verify_fatal=1",
        "--time_based",
        "--runtime=6",
      ]),
      { timeoutMs: 120_000 },
    );
    await new Promise((r) => setTimeout(r, 1000));
    expect((await readSnapshot("live@s2")).equals(s2Expected)).toBe(true);
    const t1 = Date.now();
    await client.deleteSnapshot({ volume: "live", name: "s1" }); // folds into s2's sealed layer
    expect((await readSnapshot("live@s2")).equals(s2Expected)).toBe(true);
    const t2 = Date.now();
    const { freedBytes } = await client.deleteSnapshot({ volume: "live", name: "s2" }); // folds into the live head, copying
    const t3 = Date.now();
    console.log(`fold while fio runs: s1 into s2 ${t2 - t1} ms, s2 into the live head ${t3 - t2} ms, ${freedBytes} bytes freed`);
    await fio; // exit 0: every verify during and after the folds passed
    const final = await readSnapshot("live");
    expect(final.subarray(16 * MIB).equals(headExpected.subarray(16 * MIB))).toBe(true);
    expect(await client.listSnapshots({ volume: "live" })).toEqual([]);
  }, 180_000);

  it("kill -9 around a snapshot delete that folds into the head: no data lost, no returned delete undone, an unfinished fold finishes when the pool opens", async () => {
    using dir = tempDir("keelson-fold-kill-");
    const poolPath = path.join(dir.path, "pool.img");
    let d = await startDaemon({ poolPath, poolSize: "1G", dir: dir.path });
    try {
      let client = d.client();
      const SIZE = 256 * MIB;
      await client.createVolume({ name: "v", sizeBytes: SIZE });
      const stampBlock = (tag: number, at: number): Buffer => {
        const b = Buffer.alloc(BLOCK, tag);
        b.writeUInt32BE(at / BLOCK, 0);
        return b;
      };
      const base = Buffer.alloc(SIZE);
      for (let at = 0; at < SIZE; at += BLOCK) stampBlock(0x11, at).copy(base, at);
      const c = await NbdTestClient.open(d.nbdAddress, "v");
      for (let at = 0; at < SIZE; at += 16 * MIB) expect((await c.write(at, base.subarray(at, at + 16 * MIB))).error).toBe(0);
      await client.createSnapshot({ volume: "v", name: "old" });
      // One block per extent in the head. On a pool with sub-extent allocation those are block-mapped, so the fold
      // moves the other 255 blocks of every extent into the head's map without a copy (it used to copy them).
      const expected = Buffer.from(base);
      for (let at = 0; at < SIZE; at += MIB) {
        const b = stampBlock(0x22, at);
        expect((await c.write(at, b)).error).toBe(0);
        b.copy(expected, at);
      }
      expect((await c.flush()).error).toBe(0);
      c.close();
      const deleting = client.deleteSnapshot({ volume: "v", name: "old" }).then(
        () => "returned",
        () => "failed",
      );
      await new Promise((r) => setTimeout(r, 15));
      await d.kill9();
      const outcome = await deleting;
      d = await startDaemon({ poolPath, dir: dir.path });
      client = d.client();
      const left = await client.listSnapshots({ volume: "v" });
      const resumed = /"foldsFinishedAtOpen":(\d+)/.exec(d.log())?.[1];
      console.log(
        `kill -9 during the fold: the delete call ${outcome}; after restart the snapshot is ${left.length ? "still there" : "gone"}, folds finished at open: ${resumed}`,
      );
      // Three outcomes are right: the kill came before the delete was durable (the snapshot is there), or during
      // the fold (the restarted engine finished it), or after the fold's commit, when the reply may have been lost
      // with the process. A fold without copies takes some 30 ms here; a kill at 60 ms came after it, and in CI
      // the call then failed that way. src/store/layer-gc.test.ts stops folds at chosen extents, for certain.
      // What is never right is a delete that returned and a snapshot that is back.
      expect(resumed === "0" || resumed === "1", `foldsFinishedAtOpen logged: ${resumed}`).toBe(true);
      if (outcome === "returned") expect(left).toEqual([]);
      if (resumed === "1") expect(left).toEqual([]);
      if (left.length > 0) {
        // The kill came before the delete was durable: the snapshot is intact, and can be deleted again.
        const snap = await NbdTestClient.open(d.nbdAddress, "v@old");
        for (let at = 0; at < SIZE; at += 16 * MIB) {
          expect((await snap.read(at, 16 * MIB)).data.equals(base.subarray(at, at + 16 * MIB))).toBe(true);
        }
        await snap.disconnect();
        await client.deleteSnapshot({ volume: "v", name: "old" });
      }
      const v = await NbdTestClient.open(d.nbdAddress, "v");
      for (let at = 0; at < SIZE; at += 16 * MIB) {
        expect((await v.read(at, 16 * MIB)).data.equals(expected.subarray(at, at + 16 * MIB)), `at ${at}`).toBe(true);
      }
      await v.disconnect();
      // The snapshot's extents are gone: only the head's 256 remain allocated.
      expect((await client.getVolume({ name: "v" })).allocatedBytes).toBe(SIZE);
      expect((await client.getNode()).pool.allocatedBytes).toBe(SIZE);
    } finally {
      await d.stop();
    }
  }, 120_000);

  it("full pool: a write fails with ENOSPC, the daemon stays up, acknowledged data survives kill -9, and space comes back after a delete", async () => {
    using dir = tempDir("keelson-full-");
    const poolPath = path.join(dir.path, "pool.img");
    let d = await startDaemon({ poolPath, poolSize: "48M", dir: dir.path });
    try {
      let client = d.client();
      const total = (await client.getNode()).pool.totalBytes;
      await client.createVolume({ name: "ballast", sizeBytes: 8 * MIB });
      // Larger than the pool (thin), still inside its 200% over-commit limit.
      await client.createVolume({ name: "big", sizeBytes: 48 * MIB });
      const ballast = await NbdTestClient.open(d.nbdAddress, "ballast");
      expect((await ballast.write(0, Buffer.alloc(8 * MIB, 0xb1))).error).toBe(0);
      await ballast.disconnect();
      const big = await NbdTestClient.open(d.nbdAddress, "big");
      const acked: number[] = [];
      let enospc = 0;
      for (let chunk = 0; chunk < 48 && enospc === 0; chunk++) {
        const r = await big.write(chunk * MIB, Buffer.alloc(MIB, chunk & 0xff || 1));
        if (r.error === 0) acked.push(chunk);
        else if (r.error === ENOSPC) enospc++;
        else throw new Error(`unexpected NBD error ${r.error}`);
      }
      expect(enospc).toBe(1);
      expect(acked.length * MIB + 8 * MIB).toBe(total);
      expect((await big.flush()).error).toBe(0);
      const node = await client.getNode();
      expect(node.pool.freeBytes).toBe(0);
      expect(node.pool.allocatedBytes).toBe(total);
      // Acknowledged and flushed data survives a crash of the full pool.
      big.close();
      await d.kill9();
      d = await startDaemon({ poolPath, dir: dir.path });
      client = d.client();
      const again = await NbdTestClient.open(d.nbdAddress, "big");
      for (const chunk of acked) {
        const r = await again.read(chunk * MIB, MIB);
        expect(r.data.equals(Buffer.alloc(MIB, chunk & 0xff || 1)), `chunk ${chunk}`).toBe(true);
      }
      expect((await again.write(acked.length * MIB, Buffer.alloc(MIB, 7))).error).toBe(ENOSPC);
      const { freedBytes } = await client.deleteVolume({ name: "ballast" });
      expect(freedBytes).toBe(8 * MIB);
      expect((await client.getNode()).pool.freeBytes).toBe(8 * MIB);
      expect((await again.write(acked.length * MIB, Buffer.alloc(MIB, 7))).error).toBe(0);
      // Snapshot delete returns space too: snapshot, overwrite (new extents), delete the snapshot.
      await again.disconnect();
      await client.createSnapshot({ volume: "big", name: "s" });
      const w = await NbdTestClient.open(d.nbdAddress, "big");
      for (let chunk = 0; chunk < 4; chunk++) expect((await w.write(chunk * MIB, Buffer.alloc(MIB, 0x5a))).error).toBe(0);
      expect((await client.getNode()).pool.freeBytes).toBe(3 * MIB);
      expect((await client.deleteSnapshot({ volume: "big", name: "s" })).freedBytes).toBe(4 * MIB);
      expect((await client.getNode()).pool.freeBytes).toBe(7 * MIB);
      const r = await w.read(0, MIB);
      expect(r.data.equals(Buffer.alloc(MIB, 0x5a))).toBe(true);
      const r5 = await w.read(5 * MIB, MIB);
      expect(r5.data.equals(Buffer.alloc(MIB, 5))).toBe(true);
      await w.disconnect();
    } finally {
      await d.stop();
    }
  }, 120_000);
});
