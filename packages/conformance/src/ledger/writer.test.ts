import fs from "node:fs";
import os from "node:os";
import path from "node:path";
import { afterEach, beforeEach, describe, expect, it } from "vitest";
import { type NbdClientConnection, nbdReader, openNbd } from "../nbd/client.js";
import { canRun } from "../testing/env.js";
import { LossyNbdProxy } from "../testing/lossy-nbd-proxy.js";
import { type StartedNbdkit, startNbdkit } from "../testing/nbdkit.js";
import type { Ledger } from "./ledger.js";
import { type VerifyMode, type VerifyResult, verifyLedger } from "./verify.js";
import { LedgerWriter, type LedgerWriterOptions } from "./writer.js";

// The writer against real nbdkit processes: clean runs, a lying proxy, and
// process kills with and without the data surviving.

const HAS_NBDKIT = canRun({ tools: ["nbdkit"] }, "ledger writer against nbdkit");
const MiB = 1024 * 1024;

let dir = "";
beforeEach(() => {
  dir = fs.mkdtempSync(path.join(os.tmpdir(), "keelson-ledger-"));
});
afterEach(() => {
  fs.rmSync(dir, { recursive: true, force: true });
});

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

function options(uri: string, overrides: Partial<LedgerWriterOptions> = {}): LedgerWriterOptions {
  const seed = Number(process.env.KEELSON_SEED ?? Date.now() % 2 ** 31);
  console.log(`ledger writer seed ${seed}`);
  return { uris: [uri], regionBytes: 16 * MiB, connections: 4, depth: 8, flushEveryMs: 200, random: seeded(seed), ...overrides };
}

async function verifyThrough(uri: string, ledger: Ledger, mode: VerifyMode): Promise<VerifyResult> {
  let conn: NbdClientConnection | undefined;
  try {
    conn = await openNbd(uri, { timeoutMs: 5_000 });
    return await verifyLedger(ledger, nbdReader(conn, uri), { mode });
  } finally {
    conn?.close();
  }
}

const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

describe.skipIf(!HAS_NBDKIT)("ledger writer against nbdkit", () => {
  it("4 overlapping connections for 2.5 s on nbdkit memory: no acknowledged write lost", async () => {
    let nbdkit: StartedNbdkit | undefined;
    let writer: LedgerWriter | undefined;
    try {
      nbdkit = await startNbdkit({ socketPath: path.join(dir, "mem.sock"), plugin: ["memory", "64M"] });
      writer = await LedgerWriter.start(options(nbdkit.uri));
      const startedAt = Date.now();
      await sleep(1_200);
      await writer.pause();
      const paused = writer.counts();
      expect(paused.writesSent).toBe(paused.writesAcked + paused.writesFailed);
      await sleep(200);
      expect(writer.counts().writesSent).toBe(paused.writesSent);
      writer.resume();
      await sleep(1_100);
      const ledger = await writer.stop();
      const counts = writer.counts();
      console.log("clean run", counts);
      expect(counts.writesAcked).toBeGreaterThan(paused.writesAcked);
      expect(counts).toMatchObject({ writesFailed: 0, flushesFailed: 0, sessions: 4, reconnects: 0 });
      expect(counts.flushesAcked).toBeGreaterThan(4);
      expect(writer.ackedPerSecond().points.reduce((a, b) => a + b, 0)).toBe(counts.writesAcked);
      // Bounded memory: after the last flush a block keeps about one write, not its whole history.
      expect(ledger.retainedWrites).toBeLessThanOrEqual(2 * 4096);
      expect(writer.firstAckAfter(startedAt)).toBeGreaterThanOrEqual(startedAt);
      for (const mode of ["acknowledged", "flushed"] as const) {
        const result = await verifyThrough(nbdkit.uri, ledger, mode);
        console.log(mode, result);
        expect(result).toMatchObject({ blocksChecked: 4096, lostWrites: 0, tornBlocks: 0, unexpected: 0, examples: [] });
        expect(result.requiredBlocks).toBeGreaterThan(100);
      }
    } finally {
      await writer?.stop();
      await nbdkit?.stop("SIGKILL");
    }
  });

  it("a proxy that acknowledges every 100th write without storing it: the check finds lost writes", async () => {
    let nbdkit: StartedNbdkit | undefined;
    let proxy: LossyNbdProxy | undefined;
    let writer: LedgerWriter | undefined;
    try {
      nbdkit = await startNbdkit({ socketPath: path.join(dir, "mem.sock"), plugin: ["memory", "64M"] });
      proxy = await LossyNbdProxy.start({ upstreamUri: nbdkit.uri, socketPath: path.join(dir, "lossy.sock") });
      writer = await LedgerWriter.start(options(proxy.uri, { regionBytes: 64 * MiB }));
      await sleep(2_000);
      const ledger = await writer.stop();
      expect(proxy.writesDropped).toBeGreaterThan(0);
      const result = await verifyThrough(nbdkit.uri, ledger, "acknowledged");
      console.log(`dropped ${proxy.writesDropped} of ${proxy.writesSeen}`, result);
      expect(result.lostWrites).toBeGreaterThan(0);
      expect(result.lostWrites).toBeLessThanOrEqual(proxy.writesDropped);
      expect(result.unexpected).toBe(0);
      expect(result.examples[0]).toMatch(
        /^block at offset \d+ \(lost\): expected seq \d+ \(sent \+\d+ ms on connection \d, acknowledged \+\d+ ms.*\) .*found (zeroes|seq \d+)/,
      );
    } finally {
      await writer?.stop();
      await proxy?.close();
      await nbdkit?.stop("SIGKILL");
    }
  });

  it("nbdkit memory killed -9 and restarted empty: the writer reconnects, and acknowledged writes are lost", async () => {
    let nbdkit: StartedNbdkit | undefined;
    let writer: LedgerWriter | undefined;
    const socketPath = path.join(dir, "mem.sock");
    try {
      nbdkit = await startNbdkit({ socketPath, plugin: ["memory", "64M"] });
      // A region large enough that the short run after the restart cannot rewrite every block.
      writer = await LedgerWriter.start(options(nbdkit.uri, { regionBytes: 64 * MiB }));
      await sleep(1_000);
      const killedAt = Date.now();
      await nbdkit.stop("SIGKILL");
      nbdkit = await startNbdkit({ socketPath, plugin: ["memory", "64M"] });
      await sleep(300);
      const ledger = await writer.stop();
      const counts = writer.counts();
      console.log("memory kill", counts);
      expect(counts.reconnects).toBe(4);
      const firstAck = writer.firstAckAfter(killedAt, { onNewConnection: true });
      expect(firstAck).toBeGreaterThan(killedAt);
      console.log(`first ack on a new connection ${firstAck! - killedAt} ms after the kill`);
      const result = await verifyThrough(nbdkit.uri, ledger, "acknowledged");
      console.log(result);
      expect(result.lostWrites).toBeGreaterThan(0);
      expect(result.examples[0]).toMatch(/found zeroes/);
      // nbdkit memory has no durable storage: even flushed writes die with the process.
      expect((await verifyThrough(nbdkit.uri, ledger, "flushed")).lostWrites).toBeGreaterThan(0);
    } finally {
      await writer?.stop();
      await nbdkit?.stop("SIGKILL");
    }
  });

  // nbdkit's file plugin acknowledges a write once pwrite() returned: the data
  // is then in the kernel's page cache, which belongs to the kernel, not to the
  // process. kill -9 loses nothing acknowledged; only a kernel crash or power
  // loss would (which is what flushed mode is for).
  it("nbdkit file killed -9 and restarted on the same file: no acknowledged write lost (page cache survives)", async () => {
    let nbdkit: StartedNbdkit | undefined;
    let writer: LedgerWriter | undefined;
    const socketPath = path.join(dir, "file.sock");
    const image = path.join(dir, "disk.img");
    fs.writeFileSync(image, "");
    fs.truncateSync(image, 64 * MiB);
    const plugin = ["file", `file=${image}`];
    try {
      nbdkit = await startNbdkit({ socketPath, plugin });
      let restarted: Promise<StartedNbdkit> | undefined;
      writer = await LedgerWriter.start(
        options(nbdkit.uri, {
          // The suite would re-attach the volume elsewhere here; the test restarts nbdkit on the same file.
          reconnect: async () => (await (restarted as Promise<StartedNbdkit>)).uri,
        }),
      );
      await sleep(1_000);
      const before = writer.counts();
      restarted = nbdkit.stop("SIGKILL").then(() => startNbdkit({ socketPath, plugin }));
      nbdkit = await restarted;
      await sleep(1_000);
      const ledger = await writer.stop();
      const counts = writer.counts();
      console.log("file kill", counts);
      expect(counts.reconnects).toBe(4);
      expect(counts.writesAcked).toBeGreaterThan(before.writesAcked);
      for (const mode of ["acknowledged", "flushed"] as const) {
        const result = await verifyThrough(nbdkit.uri, ledger, mode);
        console.log(mode, result);
        expect(result).toMatchObject({ lostWrites: 0, tornBlocks: 0, unexpected: 0 });
        expect(result.requiredBlocks).toBeGreaterThan(100);
      }
    } finally {
      await writer?.stop();
      await nbdkit?.stop("SIGKILL");
    }
  });
});
