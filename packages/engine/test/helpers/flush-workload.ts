import { expect } from "vitest";
import type { NbdTestClient } from "./nbd-client.js";

/** Unit of the durability workload's writes. */
export const BLOCK = 4096;

/** A block whose every 8-byte slot holds the id of the write that produced it, so torn or stale blocks show. */
export function blockStamp(id: number): Buffer {
  const b = Buffer.alloc(BLOCK);
  for (let at = 0; at < BLOCK; at += 8) b.writeBigUInt64BE(BigInt(id), at);
  return b;
}

/** The write id a block (or any stretch of whole stamps) holds: 0 for zeros, -1 for anything no single write produced. */
export function blockStampOf(b: Buffer): number {
  const first = b.readBigUInt64BE(0);
  for (let at = 8; at < b.length; at += 8) if (b.readBigUInt64BE(at) !== first) return -1;
  return Number(first);
}

/** The write ids of each `sectorBytes` of a block (a block torn by a power cut holds several). */
function sectorStamps(b: Buffer, sectorBytes: number): number[] {
  const ids: number[] = [];
  for (let at = 0; at < b.length; at += sectorBytes) ids.push(blockStampOf(b.subarray(at, at + sectorBytes)));
  return ids;
}

interface WriteRecord {
  id: number;
  block: number;
  /** Sequence point at which the write was sent and at which its ack arrived (Infinity until then). */
  sentAt: number;
  ackedAt: number;
}

/**
 * Random stamped 4 KiB writes by `writers` concurrent writers, and a FLUSH
 * every 20 ms, until the connection fails or `stop()`; records, on one
 * logical clock, when each write was sent and acknowledged and when the last
 * acknowledged FLUSH was sent (the durable cut).
 */
export function flushWorkload(client: NbdTestClient, options: { blocks: number; random: () => number; writers?: number }) {
  const { blocks, random } = options;
  let clock = 0;
  const writes: WriteRecord[] = [];
  const busy = new Set<number>();
  /** Clock value at which the last acknowledged FLUSH was sent: every write acknowledged before it is durable. */
  let durableCut = -1;
  let flushes = 0;
  let stop = false;
  const worker = async (): Promise<void> => {
    while (!stop) {
      let block = Math.floor(random() * blocks);
      // One write per block in flight at a time, so "the last write to a block" is well defined.
      while (busy.has(block)) block = (block + 1) % blocks;
      busy.add(block);
      const rec: WriteRecord = { id: writes.length + 1, block, sentAt: ++clock, ackedAt: Number.POSITIVE_INFINITY };
      writes.push(rec);
      const r = await client.write(block * BLOCK, blockStamp(rec.id));
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
      flushes++;
    }
  };
  const running = Promise.all([...Array.from({ length: options.writers ?? 16 }, worker), flusher()]);
  return {
    /** Stops sending; resolves when every request has its answer (or the connection is gone). */
    stop: async (): Promise<void> => {
      stop = true;
      await running;
    },
    summary: () => ({ writes: writes.length, flushes, durableCut }),
    /**
     * Reads every written block through `reader`: it must hold the last write
     * acknowledged before the durable cut, or a write sent after that one was
     * acknowledged (it may or may not have landed), never a torn or older one.
     */
    verify: async (reader: NbdTestClient, seed: number, options: { tornSectorBytes?: number } = {}) => {
      expect(durableCut, "no FLUSH was acknowledged before the crash").toBeGreaterThan(0);
      const byBlock = new Map<number, WriteRecord[]>();
      for (const w of writes) byBlock.set(w.block, [...(byBlock.get(w.block) ?? []), w]);
      let exact = 0;
      let checked = 0;
      let torn = 0;
      for (const [block, list] of byBlock) {
        const durable = list.filter((w) => w.ackedAt < durableCut).at(-1);
        const allowed = new Set(list.filter((w) => !durable || w.sentAt > durable.ackedAt).map((w) => w.id));
        allowed.add(durable ? durable.id : 0);
        const got = await reader.read(block * BLOCK, BLOCK);
        expect(got.error).toBe(0);
        // A write not covered by a flush may be torn by a power cut, at the disk's sector size: each
        // sector then holds one of the allowed writes.
        const ids = sectorStamps(got.data, options.tornSectorBytes ?? BLOCK);
        const bad = ids.filter((id) => !allowed.has(id));
        expect(bad, `block ${block} holds writes ${ids.join(",")}; allowed ${[...allowed].join(",")} (seed ${seed})`).toEqual([]);
        if (new Set(ids).size > 1) torn++;
        if (durable && ids.every((id) => id === durable.id)) exact++;
        if (durable) checked++;
      }
      return { checked, exact, torn };
    },
  };
}
