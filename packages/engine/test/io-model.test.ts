import path from "node:path";
import { describe, expect, it } from "vitest";
import { seededRandom, testSeed } from "../src/testing/random.js";
import { startDaemon, type TestDaemon, tempDir } from "./helpers/daemon.js";
import { BLOCK, blockStamp, blockStampOf } from "./helpers/flush-workload.js";
import { NbdTestClient } from "./helpers/nbd-client.js";

// The data path against a reference model, on whichever disk I/O engine the
// process runs (npm test runs this file on io_uring and, with
// KEELSON_IO=threadpool, on the thread pool): random reads, writes (1 to 8
// blocks, some FUA), trims, write-zeroes and flushes, many in flight at once
// over two connections; every read is checked against the model while the
// load runs; then keelsond is killed (-9) mid-load and restarted, and every
// block must hold what was acknowledged before the last acknowledged FLUSH
// (or a later operation on it, which may or may not have landed). Three such
// cycles, each starting from what the previous one read back.

const BLOCKS = 2048;
const CYCLES = 3;
const LOAD_MS = 1200;
const WORKERS_PER_CONNECTION = 12;

/** One operation on a run of blocks, on the test's logical clock. */
interface Op {
  /** The stamp each block holds after it: the write's id, or 0 (zeroed or trimmed). */
  stamp: number;
  sentAt: number;
  /** Infinity until acknowledged; a failed operation never is. */
  ackedAt: number;
}

interface Cycle {
  clock: number;
  /** What each block held when the cycle started (verified), then its operations in order. */
  base: number[];
  history: Op[][];
  /** Clock value at which the last acknowledged FLUSH was sent. */
  durableCut: number;
  reads: number;
  mismatches: string[];
  counts: Record<"write" | "read" | "trim" | "zero" | "flush", number>;
}

/** The stamp a block holds now as far as acknowledged operations tell (nothing of it is in flight: blocks are locked). */
function current(c: Cycle, block: number): number {
  const ops = c.history[block] as Op[];
  for (let i = ops.length - 1; i >= 0; i--) {
    const op = ops[i] as Op;
    if (op.ackedAt !== Number.POSITIVE_INFINITY) return op.stamp;
  }
  return c.base[block] as number;
}

async function load(
  clients: NbdTestClient[],
  c: Cycle,
  random: () => number,
  nextId: () => number,
): Promise<() => Promise<void>> {
  const busy = new Set<number>();
  let stop = false;
  const lock = (count: number): number => {
    for (;;) {
      const first = Math.floor(random() * (BLOCKS - count));
      let free = true;
      for (let b = first; b < first + count; b++) if (busy.has(b)) free = false;
      if (!free) continue;
      for (let b = first; b < first + count; b++) busy.add(b);
      return first;
    }
  };
  const unlock = (first: number, count: number): void => {
    for (let b = first; b < first + count; b++) busy.delete(b);
  };
  const worker = async (client: NbdTestClient): Promise<void> => {
    while (!stop) {
      const count = 1 + Math.floor(random() * 8);
      const first = lock(count);
      const pick = random();
      if (pick < 0.3) {
        c.counts.read++;
        const r = await client.read(first * BLOCK, count * BLOCK);
        if (r.error === 0) {
          c.reads++;
          for (let i = 0; i < count; i++) {
            const want = current(c, first + i);
            const got = blockStampOf(r.data.subarray(i * BLOCK, (i + 1) * BLOCK));
            if (got !== want) c.mismatches.push(`read of block ${first + i}: ${got}, the model says ${want}`);
          }
        }
        unlock(first, count);
        if (r.error !== 0) return;
        continue;
      }
      const kind = pick < 0.8 ? "write" : pick < 0.9 ? "trim" : "zero";
      c.counts[kind]++;
      const ids = Array.from({ length: count }, () => (kind === "write" ? nextId() : 0));
      const ops = ids.map((stamp) => ({ stamp, sentAt: ++c.clock, ackedAt: Number.POSITIVE_INFINITY }));
      for (const [i, op] of ops.entries()) c.history[first + i]?.push(op);
      const r =
        kind === "write"
          ? await client.write(first * BLOCK, Buffer.concat(ids.map(blockStamp)), random() < 0.1)
          : kind === "trim"
            ? await client.trim(first * BLOCK, count * BLOCK)
            : await client.writeZeroes(first * BLOCK, count * BLOCK);
      unlock(first, count);
      if (r.error !== 0) return;
      const at = ++c.clock;
      for (const op of ops) op.ackedAt = at;
    }
  };
  const flusher = async (client: NbdTestClient): Promise<void> => {
    while (!stop) {
      await new Promise((r) => setTimeout(r, 15));
      const cut = ++c.clock;
      c.counts.flush++;
      const r = await client.flush();
      if (r.error !== 0) return;
      c.durableCut = Math.max(c.durableCut, cut);
    }
  };
  const running = Promise.all(
    clients.flatMap((client) => [...Array.from({ length: WORKERS_PER_CONNECTION }, () => worker(client)), flusher(client)]),
  );
  return async () => {
    stop = true;
    await running;
  };
}

/** The stamps a block may hold after the crash: the last operation acknowledged before the durable cut, or any later one. */
function allowed(c: Cycle, block: number): Set<number> {
  const ops = c.history[block] as Op[];
  let durableAt = ops.length - 1;
  while (durableAt >= 0 && (ops[durableAt] as Op).ackedAt >= c.durableCut) durableAt--;
  const out = new Set<number>([durableAt < 0 ? (c.base[block] as number) : (ops[durableAt] as Op).stamp]);
  for (const op of ops.slice(durableAt + 1)) out.add(op.stamp);
  return out;
}

describe("I/O model", () => {
  it("reads, writes, trims, zeroes and flushes in flight together match the model; after each of 3 kill -9 restarts every operation acknowledged before the last acknowledged FLUSH reads back", async () => {
    const seed = testSeed();
    console.log(`io-model seed=${seed} (rerun with KEELSON_SEED=${seed}); engine ${process.env.KEELSON_IO ?? "auto"}`);
    const random = seededRandom(seed);
    using dir = tempDir("keelson-io-model-");
    const poolPath = path.join(dir.path, "pool.img");
    let d: TestDaemon = await startDaemon({ poolPath, poolSize: "256M", dir: dir.path });
    await d.client().createVolume({ name: "model", sizeBytes: BLOCKS * BLOCK });
    let id = 0;
    let base = new Array<number>(BLOCKS).fill(0);
    try {
      for (let cycle = 1; cycle <= CYCLES; cycle++) {
        const c: Cycle = {
          clock: 0,
          base,
          history: Array.from({ length: BLOCKS }, () => []),
          durableCut: -1,
          reads: 0,
          mismatches: [],
          counts: { write: 0, read: 0, trim: 0, zero: 0, flush: 0 },
        };
        const clients = [await NbdTestClient.open(d.nbdAddress, "model"), await NbdTestClient.open(d.nbdSocket, "model")];
        const stop = await load(clients, c, random, () => ++id);
        await new Promise((r) => setTimeout(r, LOAD_MS));
        await d.kill9();
        await stop();
        for (const client of clients) client.close();
        console.log(`cycle ${cycle}: ${JSON.stringify(c.counts)}; ${c.reads} reads checked while running`);
        expect(c.mismatches.slice(0, 5), `seed ${seed} cycle ${cycle}`).toEqual([]);
        expect(c.reads, "reads checked against the model while the load ran").toBeGreaterThan(50);
        expect(c.durableCut, "no FLUSH was acknowledged before the kill").toBeGreaterThan(0);

        d = await startDaemon({ poolPath, dir: dir.path });
        const reader = await NbdTestClient.open(d.nbdAddress, "model");
        const back = await reader.read(0, BLOCKS * BLOCK);
        expect(back.error).toBe(0);
        const next: number[] = [];
        const bad: string[] = [];
        let exact = 0;
        for (let b = 0; b < BLOCKS; b++) {
          const got = blockStampOf(back.data.subarray(b * BLOCK, (b + 1) * BLOCK));
          const may = allowed(c, b);
          if (!may.has(got)) bad.push(`block ${b} holds ${got}; allowed ${[...may].join(",")}`);
          if (may.size === 1) exact++;
          next.push(got);
        }
        expect(bad.slice(0, 5), `seed ${seed} cycle ${cycle}: ${bad.length} blocks wrong`).toEqual([]);
        console.log(`cycle ${cycle}: after kill -9 all ${BLOCKS} blocks allowed (${exact} had exactly one allowed value)`);
        await reader.disconnect();
        base = next;
      }
    } finally {
      await d.stop();
    }
  });
});
