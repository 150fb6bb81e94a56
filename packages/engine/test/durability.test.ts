import path from "node:path";
import { describe, expect, it } from "vitest";
import { seededRandom, testSeed } from "../src/testing/random.js";
import { startDaemon, tempDir } from "./helpers/daemon.js";
import { NbdTestClient } from "./helpers/nbd-client.js";

const MIB = 1024 * 1024;
const BLOCK = 4096;

/** A block whose every 8-byte slot holds the id of the write that produced it, so torn or stale blocks show. */
function stamp(id: number): Buffer {
  const b = Buffer.alloc(BLOCK);
  for (let at = 0; at < BLOCK; at += 8) b.writeBigUInt64BE(BigInt(id), at);
  return b;
}

/** The write id a block holds: 0 for zeros, -1 for anything no single write produced. */
function stampOf(b: Buffer): number {
  const first = b.readBigUInt64BE(0);
  for (let at = 8; at < BLOCK; at += 8) if (b.readBigUInt64BE(at) !== first) return -1;
  return Number(first);
}

interface WriteRecord {
  id: number;
  block: number;
  /** Sequence point at which the write was sent and at which its ack arrived (Infinity until then). */
  sentAt: number;
  ackedAt: number;
}

describe("durability", () => {
  it("kill -9 mid-workload: every write acknowledged before the last acknowledged FLUSH reads back exactly", async () => {
    const seed = testSeed();
    console.log(`durability seed=${seed} (rerun with KEELSON_SEED=${seed})`);
    const rand = seededRandom(seed);
    using dir = tempDir("keelson-kill9-");
    const poolPath = path.join(dir.path, "pool.img");
    const blocks = (64 * MIB) / BLOCK;
    let d = await startDaemon({ poolPath, poolSize: "512M", dir: dir.path });
    await d.client().createVolume({ name: "crash", sizeBytes: blocks * BLOCK });
    const client = await NbdTestClient.open(d.nbdAddress, "crash");

    let clock = 0;
    const writes: WriteRecord[] = [];
    const busy = new Set<number>();
    /** Snapshot of the writes acknowledged when the last acknowledged FLUSH was sent. */
    let durableCut = -1;
    let stop = false;
    const worker = async (): Promise<void> => {
      while (!stop) {
        let block = Math.floor(rand() * blocks);
        // One write per block in flight at a time, so "the last write to a block" is well defined.
        while (busy.has(block)) block = (block + 1) % blocks;
        busy.add(block);
        const rec: WriteRecord = { id: writes.length + 1, block, sentAt: ++clock, ackedAt: Number.POSITIVE_INFINITY };
        writes.push(rec);
        const r = await client.write(block * BLOCK, stamp(rec.id));
        busy.delete(block);
        if (r.error !== 0) return;
        rec.ackedAt = ++clock;
      }
    };
    const flusher = async (): Promise<void> => {
      while (!stop) {
        await new Promise((r) => setTimeout(r, 20));
        const cut = ++clock;
        const r = await client.flush();
        if (r.error !== 0) return;
        durableCut = Math.max(durableCut, cut);
      }
    };
    const running = [...Array.from({ length: 16 }, worker), flusher()];
    await new Promise((r) => setTimeout(r, 1500));
    await d.kill9();
    stop = true;
    await Promise.all(running);
    client.close();
    expect(durableCut).toBeGreaterThan(0);

    d = await startDaemon({ poolPath, dir: dir.path });
    try {
      const reader = await NbdTestClient.open(d.nbdAddress, "crash");
      const byBlock = new Map<number, WriteRecord[]>();
      for (const w of writes) byBlock.set(w.block, [...(byBlock.get(w.block) ?? []), w]);
      let exact = 0;
      let checked = 0;
      for (const [block, list] of byBlock) {
        const durable = list.filter((w) => w.ackedAt < durableCut).at(-1);
        // Allowed: the durable write, or any write sent after it was acknowledged (it may or may not have landed).
        const allowed = new Set(list.filter((w) => !durable || w.sentAt > durable.ackedAt).map((w) => w.id));
        if (durable) allowed.add(durable.id);
        else allowed.add(0);
        const got = await reader.read(block * BLOCK, BLOCK);
        expect(got.error).toBe(0);
        const id = stampOf(got.data);
        expect(allowed.has(id), `block ${block} holds write ${id}; allowed ${[...allowed].join(",")} (seed ${seed})`).toBe(true);
        if (durable && id === durable.id) exact++;
        if (durable) checked++;
      }
      console.log(`kill -9: ${writes.length} writes sent, ${checked} blocks had a durable write, ${exact} hold exactly it`);
      expect(checked).toBeGreaterThan(100);
      await reader.disconnect();
    } finally {
      await d.stop();
    }
  });

  it("restart (clean and kill -9) keeps every volume and its data; deleting a volume returns its space", async () => {
    using dir = tempDir("keelson-restart-");
    const poolPath = path.join(dir.path, "pool.img");
    let d = await startDaemon({ poolPath, poolSize: "512M", dir: dir.path });
    const free0 = (await d.client().getNode()).pool.freeBytes;
    const sizes: Record<string, number> = { a: 16 * MIB, b: 40 * MIB, c: 8 * MIB };
    for (const [name, sizeBytes] of Object.entries(sizes))
      await d.client().createVolume({ name, sizeBytes, labels: { t: name } });
    const c1 = await NbdTestClient.open(d.nbdAddress, "b");
    for (let i = 0; i < 10; i++) expect((await c1.write(i * 3 * MIB, stamp(1000 + i))).error).toBe(0);
    expect((await c1.flush()).error).toBe(0);
    await c1.disconnect();

    for (const restart of ["clean", "kill9"] as const) {
      if (restart === "clean") await d.stop();
      else await d.kill9();
      d = await startDaemon({ poolPath, dir: dir.path });
      const vols = await d.client().listVolumes();
      expect(Object.fromEntries(vols.map((v) => [v.name, v.sizeBytes]))).toEqual(sizes);
      expect(vols.find((v) => v.name === "a")?.labels).toEqual({ t: "a" });
      const c2 = await NbdTestClient.open(d.nbdAddress, "b");
      for (let i = 0; i < 10; i++) expect(stampOf((await c2.read(i * 3 * MIB, BLOCK)).data)).toBe(1000 + i);
      await c2.disconnect();
    }
    const node = await d.client().getNode();
    expect(node.pool.freeBytes).toBe(free0 - 10 * MIB);
    const { freedBytes } = await d.client().deleteVolume({ name: "b" });
    expect(freedBytes).toBe(10 * MIB);
    await d.kill9();
    d = await startDaemon({ poolPath, dir: dir.path });
    expect((await d.client().getNode()).pool.freeBytes).toBe(free0);
    expect((await d.client().listVolumes()).map((v) => v.name)).toEqual(["a", "c"]);
    await d.stop();
  });
});
