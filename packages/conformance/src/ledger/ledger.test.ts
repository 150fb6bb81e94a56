import { describe, expect, it } from "vitest";
import { ConformanceError } from "../errors.js";
import { BLOCK_BYTES, parseBlock, stampBlock } from "./block.js";
import { Ledger, type WriteRecord } from "./ledger.js";
import { type VerifyMode, type VerifyResult, verifyLedger } from "./verify.js";

// The ledger and the verification rule without I/O: a Buffer is the disk,
// and each test plays a history of sends, replies and flushes on the ledger.

const WRITER = 0x5eed;
const BLOCKS = 8;

/** A seeded PRNG (mulberry32) so a failing history can be replayed from the printed seed. */
function seeded(seed: number): () => number {
  let a = seed >>> 0;
  return () => {
    a = (a + 0x6d2b79f5) >>> 0;
    let t = a;
    t = Math.imul(t ^ (t >>> 15), t | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    return ((t ^ (t >>> 14)) >>> 0) / 2 ** 32;
  };
}

class Harness {
  clockMs = 1_000_000;
  readonly ledger = new Ledger({
    writerId: WRITER,
    regionOffsetBytes: 0,
    regionBytes: BLOCKS * BLOCK_BYTES,
    now: () => this.clockMs++,
  });
  readonly disk = Buffer.alloc(BLOCKS * BLOCK_BYTES);
  readonly session = this.ledger.openSession(0);

  send(block: number, options: { fua?: boolean } = {}): WriteRecord {
    return this.ledger.recordSend(block * BLOCK_BYTES, 0, this.session, options.fua ?? false);
  }
  /** The storage applies `write`: the disk now holds its block. */
  apply(write: WriteRecord): void {
    stampBlock(write.offsetBytes, write.seq, WRITER, {
      sentAtMs: write.sentAtMs,
      into: this.disk.subarray(write.offsetBytes, write.offsetBytes + BLOCK_BYTES),
    });
  }
  ack(write: WriteRecord): void {
    this.ledger.recordWriteReply(write, 0);
  }
  /** Send, apply, acknowledge: one write with nothing concurrent. */
  write(block: number): WriteRecord {
    const w = this.send(block);
    this.apply(w);
    this.ack(w);
    return w;
  }
  flush(): void {
    const f = this.ledger.recordFlushSend(this.session);
    this.ledger.recordFlushReply(f, 0);
  }
  verify(mode: VerifyMode): Promise<VerifyResult> {
    return verifyLedger(this.ledger, async (o, l) => Buffer.from(this.disk.subarray(o, o + l)), {
      mode,
      chunkBytes: 3 * BLOCK_BYTES,
    });
  }
}

describe("ledger blocks", () => {
  it("a stamped block parses back; zeroes, foreign bytes and a torn block are told apart", () => {
    const block = stampBlock(12 * BLOCK_BYTES, 77, WRITER, { sentAtMs: 1234 });
    expect(parseBlock(block)).toEqual({ offsetBytes: 12 * BLOCK_BYTES, seq: 77, writer: WRITER, sentAtMs: 1234 });
    expect(parseBlock(Buffer.alloc(BLOCK_BYTES))).toBe("zero");
    expect(parseBlock(Buffer.alloc(BLOCK_BYTES, 0xab))).toBe("garbage");
    // Second half from another write to the same block: the header survives, the CRC does not.
    const torn = Buffer.concat([block.subarray(0, 2048), stampBlock(12 * BLOCK_BYTES, 78, WRITER).subarray(2048)]);
    expect(parseBlock(torn)).toBe("torn");
    // The payload is a function of (offset, seq): two writes of one block differ beyond the header.
    expect(
      stampBlock(0, 1, WRITER)
        .subarray(64, 4092)
        .equals(stampBlock(0, 2, WRITER).subarray(64, 4092)),
    ).toBe(false);
  });
});

describe("verifyLedger", () => {
  it("an acknowledged write read back is legal; zeroes instead are a lost write named by offset and seq", async () => {
    const h = new Harness();
    const w = h.write(2);
    expect(await h.verify("acknowledged")).toMatchObject({
      blocksChecked: BLOCKS,
      requiredBlocks: 1,
      lostWrites: 0,
      unexpected: 0,
    });
    h.disk.fill(0);
    const r = await h.verify("acknowledged");
    expect(r.lostWrites).toBe(1);
    expect(r.examples[0]).toMatch(
      new RegExp(
        `^block at offset ${2 * BLOCK_BYTES} \\(lost\\): expected seq ${w.seq} \\(sent .*acknowledged .*\\).* found zeroes$`,
      ),
    );
  });

  it("an older write that an acknowledged write sent after its ack replaced is lost", async () => {
    const h = new Harness();
    const old = h.write(1);
    const snapshot = Buffer.from(h.disk);
    h.write(1);
    h.disk.set(snapshot);
    const r = await h.verify("acknowledged");
    expect(r.lostWrites).toBe(1);
    expect(r.examples[0]).toMatch(new RegExp(`found seq ${old.seq} .*which seq ${old.seq + 1} replaced`));
  });

  it("concurrent writes may land in either order; an unacknowledged write may land any time", async () => {
    const h = new Harness();
    const a = h.send(3);
    const b = h.send(3);
    h.apply(b);
    h.apply(a);
    h.ack(b);
    h.ack(a);
    expect((await h.verify("acknowledged")).lostWrites).toBe(0);
    h.apply(b);
    expect((await h.verify("acknowledged")).lostWrites).toBe(0);
    const unknown = h.send(3);
    h.ledger.recordWriteReply(unknown, "closed");
    h.write(3);
    h.apply(unknown);
    expect(await h.verify("acknowledged")).toMatchObject({ lostWrites: 0, unexpected: 0 });
  });

  it("flushed mode requires only writes an acknowledged flush covered", async () => {
    const h = new Harness();
    const durable = h.write(4);
    h.flush();
    const snapshot = Buffer.from(h.disk);
    h.write(4);
    h.write(5);
    // A crash loses what no flush covered.
    h.disk.set(snapshot);
    expect((await h.verify("flushed")).lostWrites).toBe(0);
    expect((await h.verify("acknowledged")).lostWrites).toBe(2);
    h.disk.fill(0);
    const r = await h.verify("flushed");
    expect(r.lostWrites).toBe(1);
    expect(r.examples[0]).toMatch(new RegExp(`expected seq ${durable.seq} \\(.*flushed .*\\)`));
  });

  it("a flush covers only writes acknowledged before it was sent; FUA covers itself", async () => {
    const h = new Harness();
    const w = h.send(0);
    const f = h.ledger.recordFlushSend(h.session);
    h.apply(w);
    h.ack(w);
    h.ledger.recordFlushReply(f, 0);
    expect(h.ledger.history(0)?.lastCovered).toBeUndefined();
    const fua = h.send(1, { fua: true });
    h.apply(fua);
    h.ack(fua);
    expect(h.ledger.history(BLOCK_BYTES)?.lastCovered?.seq).toBe(fua.seq);
  });

  it("a misdirected or never-issued write of this writer is unexpected; a torn required block is torn", async () => {
    const h = new Harness();
    const w = h.write(6);
    h.write(7);
    h.disk.copy(h.disk, 0, 6 * BLOCK_BYTES, 7 * BLOCK_BYTES);
    stampBlock(1 * BLOCK_BYTES, 999, WRITER, { into: h.disk.subarray(BLOCK_BYTES, 2 * BLOCK_BYTES) });
    h.disk.writeUInt8(h.disk.readUInt8(7 * BLOCK_BYTES + 100) ^ 0xff, 7 * BLOCK_BYTES + 100);
    const r = await h.verify("acknowledged");
    expect(r).toMatchObject({ unexpected: 2, tornBlocks: 1, lostWrites: 0 });
    expect(r.examples.join("\n")).toContain(`seq ${w.seq}, written for offset ${6 * BLOCK_BYTES}: a misdirected write`);
    expect(r.examples.join("\n")).toContain("seq 999, which this writer never issued");
  });

  it("another writer's block is fine where nothing is required and lost where something is", async () => {
    const h = new Harness();
    h.write(0);
    stampBlock(0, 5, WRITER + 1, { into: h.disk.subarray(0, BLOCK_BYTES) });
    stampBlock(BLOCK_BYTES, 5, WRITER + 1, { into: h.disk.subarray(BLOCK_BYTES, 2 * BLOCK_BYTES) });
    expect(await h.verify("acknowledged")).toMatchObject({ lostWrites: 1, unexpected: 0 });
  });

  it("flushes prune a block's history to what verification needs; a pruned stale write still reads as lost", async () => {
    const h = new Harness();
    h.write(0);
    const stale = Buffer.from(h.disk.subarray(0, BLOCK_BYTES));
    for (let i = 0; i < 1000; i++) {
      h.write(0);
      if (i % 10 === 0) h.flush();
    }
    h.flush();
    expect(h.ledger.history(0)?.writes.length).toBe(1);
    expect(h.ledger.retainedWrites).toBe(1);
    expect((await h.verify("flushed")).lostWrites).toBe(0);
    stale.copy(h.disk, 0);
    const r = await h.verify("flushed");
    expect(r.lostWrites).toBe(1);
    expect(r.examples[0]).toMatch(/found seq 1, an older write that seq 1001 replaced/);
  });

  it("firstAckAfter finds the first ack at 1 ms resolution, and on new connections only when asked", () => {
    const h = new Harness();
    h.write(0);
    const killAtMs = h.clockMs + 500;
    h.clockMs = killAtMs + 20;
    h.write(1);
    expect(h.ledger.firstAckAfter(killAtMs)).toBe(killAtMs + 21);
    expect(h.ledger.firstAckAfter(killAtMs, { onNewConnection: true })).toBeUndefined();
    const session = h.ledger.openSession(0);
    h.clockMs += 100;
    const w = h.ledger.recordSend(0, 0, session, false);
    h.ledger.recordWriteReply(w, 0);
    expect(h.ledger.firstAckAfter(killAtMs, { onNewConnection: true })).toBe(h.clockMs - 1);
    const series = h.ledger.ackedPerSecond();
    expect(series.points.reduce((a, b) => a + b, 0)).toBe(3);
  });

  it("past maxRetainedWrites the flush history is dropped: memory stays bounded, acknowledged mode still works, flushed mode is refused", async () => {
    const h = new Harness();
    const ledger = new Ledger({
      writerId: WRITER,
      regionOffsetBytes: 0,
      regionBytes: BLOCKS * BLOCK_BYTES,
      now: () => h.clockMs++,
      maxRetainedWrites: 20,
    });
    const session = ledger.openSession(0);
    for (let i = 0; i < 500; i++) {
      const w = ledger.recordSend((i % BLOCKS) * BLOCK_BYTES, 0, session, false);
      stampBlock(w.offsetBytes, w.seq, WRITER, { into: h.disk.subarray(w.offsetBytes, w.offsetBytes + BLOCK_BYTES) });
      ledger.recordWriteReply(w, 0);
    }
    expect(ledger.flushHistoryDropped).toMatch(/more than 20 writes awaited a flush/);
    expect(ledger.retainedWrites).toBeLessThanOrEqual(BLOCKS);
    const read = async (o: number, l: number) => Buffer.from(h.disk.subarray(o, o + l));
    expect(await verifyLedger(ledger, read, { mode: "acknowledged" })).toMatchObject({ requiredBlocks: BLOCKS, lostWrites: 0 });
    const error = await verifyLedger(ledger, read, { mode: "flushed" }).catch((e: unknown) => e);
    expect(error).toBeInstanceOf(ConformanceError);
    expect((error as ConformanceError).code).toBe("INVALID_ARGUMENT");
  });

  it("randomized linearizable histories verify clean; a crash to the last flushed state is clean in flushed mode", async () => {
    const seed = Number(process.env.KEELSON_SEED ?? Date.now() % 2 ** 31);
    console.log(`ledger model seed ${seed} (KEELSON_SEED=${seed} replays it)`);
    const random = seeded(seed);
    for (let round = 0; round < 20; round++) {
      const h = new Harness();
      const inFlight: { write: WriteRecord; applied: boolean }[] = [];
      const durable = Buffer.alloc(h.disk.length);
      for (let step = 0; step < 400; step++) {
        const r = random();
        if (r < 0.35 && inFlight.length < 6) inFlight.push({ write: h.send(Math.floor(random() * BLOCKS)), applied: false });
        else if (r < 0.6 && inFlight.length > 0) {
          const entry = inFlight[Math.floor(random() * inFlight.length)]!;
          if (!entry.applied) h.apply(entry.write);
          entry.applied = true;
        } else if (r < 0.85 && inFlight.length > 0) {
          const i = Math.floor(random() * inFlight.length);
          const entry = inFlight[i]!;
          if (!entry.applied) continue;
          inFlight.splice(i, 1);
          h.ack(entry.write);
        } else if (r < 0.9 && inFlight.length > 0) {
          const [entry] = inFlight.splice(Math.floor(random() * inFlight.length), 1);
          // Cut off: applied or not, the client never hears back.
          h.ledger.recordWriteReply(entry!.write, "closed");
        } else if (r < 1) {
          // The model's durable image: a flush makes the current disk durable (all acknowledged writes are on it).
          if (inFlight.length === 0) h.disk.copy(durable);
          if (inFlight.length === 0) h.flush();
        }
      }
      expect(await h.verify("acknowledged"), `seed ${seed} round ${round}`).toMatchObject({
        lostWrites: 0,
        unexpected: 0,
        tornBlocks: 0,
      });
      expect(await h.verify("flushed"), `seed ${seed} round ${round}`).toMatchObject({
        lostWrites: 0,
        unexpected: 0,
        tornBlocks: 0,
      });
      durable.copy(h.disk);
      expect(await h.verify("flushed"), `seed ${seed} round ${round} after crash`).toMatchObject({
        lostWrites: 0,
        unexpected: 0,
      });
      const required = Array.from({ length: BLOCKS }, (_, b) => h.ledger.history(b * BLOCK_BYTES)?.lastAcked).filter((w) => w);
      if (required.length > 0) {
        h.disk.fill(0, required[0]!.offsetBytes, required[0]!.offsetBytes + BLOCK_BYTES);
        expect((await h.verify("acknowledged")).lostWrites, `seed ${seed} round ${round} zeroed`).toBeGreaterThan(0);
      }
    }
  });
});

describe("fences (a failover)", () => {
  it("a write the old attachment never answered may not land over a write acknowledged after the fence; without the fence it could", async () => {
    const h = new Harness();
    const stale = h.send(3);
    h.ledger.recordWriteReply(stale, "closed");
    h.ledger.fence();
    const fresh = h.write(3);
    expect((await h.verify("acknowledged")).lostWrites).toBe(0);
    // The old node's write lands after the takeover: split brain, and verification says so.
    h.apply(stale);
    const fenced = await h.verify("acknowledged");
    expect(fenced.lostWrites).toBe(1);
    expect(fenced.examples[0]).toMatch(new RegExp(`seq ${stale.seq} .*which seq ${fresh.seq} replaced`));

    const unfenced = new Harness();
    const s2 = unfenced.send(3);
    unfenced.ledger.recordWriteReply(s2, "closed");
    unfenced.write(3);
    unfenced.apply(s2);
    expect((await unfenced.verify("acknowledged")).lostWrites).toBe(0);
  });

  it("a write left without a reply before the fence may still be the content when nothing was acknowledged after it", async () => {
    const h = new Harness();
    h.write(2);
    const late = h.send(2);
    h.apply(late);
    h.ledger.recordWriteReply(late, "closed");
    h.ledger.fence();
    expect((await h.verify("acknowledged")).lostWrites).toBe(0);
  });

  it("verification judges only the blocks `only` accepts", async () => {
    const h = new Harness();
    h.write(1);
    h.write(5);
    h.disk.fill(0, 5 * BLOCK_BYTES, 6 * BLOCK_BYTES);
    expect((await h.verify("acknowledged")).lostWrites).toBe(1);
    const r = await verifyLedger(h.ledger, async (o, l) => h.disk.subarray(o, o + l), {
      mode: "acknowledged",
      only: (offsetBytes) => offsetBytes !== 5 * BLOCK_BYTES,
    });
    expect(r).toMatchObject({ lostWrites: 0, blocksChecked: BLOCKS - 1 });
  });
});
