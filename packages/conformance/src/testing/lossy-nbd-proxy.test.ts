import { execFile } from "node:child_process";
import fs from "node:fs";
import os from "node:os";
import path from "node:path";
import { afterEach, beforeEach, describe, expect, it } from "vitest";
import { type NbdClientConnection, openNbd } from "../nbd/client.js";
import { canRun } from "./env.js";
import { LossyNbdProxy } from "./lossy-nbd-proxy.js";
import { type StartedNbdkit, startNbdkit } from "./nbdkit.js";

const HAS_NBDKIT = canRun({ tools: ["nbdkit"] }, "lossy NBD proxy against nbdkit");
/** libnbd's nbdinfo asks for structured replies, as fio's nbd engine does. */
const HAS_NBDINFO = HAS_NBDKIT && canRun({ tools: ["nbdinfo"] }, "a libnbd client through the lossy NBD proxy");

let dir = "";
beforeEach(() => {
  dir = fs.mkdtempSync(path.join(os.tmpdir(), "keelson-proxy-"));
});
afterEach(() => {
  fs.rmSync(dir, { recursive: true, force: true });
});

describe.skipIf(!HAS_NBDKIT)("lossy NBD proxy", () => {
  it("acknowledges every 10th write without storing it; everything else, reads included, passes through", async () => {
    let nbdkit: StartedNbdkit | undefined;
    let proxy: LossyNbdProxy | undefined;
    let viaProxy: NbdClientConnection | undefined;
    let direct: NbdClientConnection | undefined;
    try {
      nbdkit = await startNbdkit({ socketPath: path.join(dir, "mem.sock"), plugin: ["memory", "16M"] });
      proxy = await LossyNbdProxy.start({
        upstreamUri: nbdkit.uri,
        socketPath: path.join(dir, "lossy.sock"),
        dropEveryNthWrite: 10,
      });
      viaProxy = await openNbd(proxy.uri, { timeoutMs: 5_000 });
      expect(viaProxy.sizeBytes).toBe(16 * 1024 * 1024);
      const results = await Promise.all(
        Array.from({ length: 100 }, (_, i) => viaProxy!.write(i * 4096, Buffer.alloc(4096, i + 1))),
      );
      expect(new Set(results)).toEqual(new Set([0]));
      expect(await viaProxy.flush()).toBe(0);
      expect({ seen: proxy.writesSeen, dropped: proxy.writesDropped }).toEqual({ seen: 100, dropped: 10 });
      direct = await openNbd(nbdkit.uri, { timeoutMs: 5_000 });
      const stored = await direct.read(0, 100 * 4096);
      const throughProxy = await viaProxy.read(0, 100 * 4096);
      expect(Buffer.isBuffer(stored) && Buffer.isBuffer(throughProxy) && stored.equals(throughProxy)).toBe(true);
      const missing: number[] = [];
      for (let i = 0; i < 100; i++) if ((stored as Buffer)[i * 4096] === 0) missing.push(i);
      // Writes were sent in order on one connection, so the 10th, 20th, ... are the missing ones.
      expect(missing).toEqual([9, 19, 29, 39, 49, 59, 69, 79, 89, 99]);
    } finally {
      viaProxy?.close();
      direct?.close();
      await proxy?.close();
      await nbdkit?.stop("SIGKILL");
    }
  });

  it("delayEveryReplyMs holds every reply back that long; dropEveryNthWrite 0 drops no write", async () => {
    let nbdkit: StartedNbdkit | undefined;
    let proxy: LossyNbdProxy | undefined;
    let viaProxy: NbdClientConnection | undefined;
    let direct: NbdClientConnection | undefined;
    try {
      nbdkit = await startNbdkit({ socketPath: path.join(dir, "mem.sock"), plugin: ["memory", "16M"] });
      proxy = await LossyNbdProxy.start({
        upstreamUri: nbdkit.uri,
        socketPath: path.join(dir, "slow.sock"),
        dropEveryNthWrite: 0,
        delayEveryReplyMs: 300,
      });
      viaProxy = await openNbd(proxy.uri, { timeoutMs: 5_000 });
      const started = performance.now();
      const elapsed = await Promise.all(
        Array.from({ length: 20 }, async (_, i) => {
          expect(await viaProxy!.write(i * 4096, Buffer.alloc(4096, i + 1))).toBe(0);
          return performance.now() - started;
        }),
      );
      // Timers have millisecond granularity; every reply waited the delay.
      for (const ms of elapsed) expect(ms).toBeGreaterThanOrEqual(295);
      const readStarted = performance.now();
      const back = await viaProxy.read(0, 20 * 4096);
      expect(performance.now() - readStarted).toBeGreaterThanOrEqual(295);
      expect({ seen: proxy.writesSeen, dropped: proxy.writesDropped }).toEqual({ seen: 20, dropped: 0 });
      direct = await openNbd(nbdkit.uri, { timeoutMs: 5_000 });
      const stored = await direct.read(0, 20 * 4096);
      expect(Buffer.isBuffer(back) && Buffer.isBuffer(stored) && back.equals(stored)).toBe(true);
      for (let i = 0; i < 20; i++) expect((stored as Buffer)[i * 4096]).toBe(i + 1);
    } finally {
      viaProxy?.close();
      direct?.close();
      await proxy?.close();
      await nbdkit?.stop("SIGKILL");
    }
  });

  it.runIf(HAS_NBDINFO)(
    "a libnbd client asking for structured replies is told they are unsupported and connects with simple replies",
    async () => {
      let nbdkit: StartedNbdkit | undefined;
      let proxy: LossyNbdProxy | undefined;
      try {
        nbdkit = await startNbdkit({ socketPath: path.join(dir, "mem.sock"), plugin: ["memory", "16M"] });
        proxy = await LossyNbdProxy.start({ upstreamUri: nbdkit.uri, socketPath: path.join(dir, "proxy.sock") });
        const uri = proxy.uri;
        const size = await new Promise<string>((resolve, reject) =>
          execFile("nbdinfo", ["--size", uri], { timeout: 10_000 }, (error, stdout, stderr) =>
            error ? reject(new Error(`nbdinfo: ${stderr || error.message}`)) : resolve(stdout.trim()),
          ),
        );
        expect(size).toBe(String(16 * 1024 * 1024));
      } finally {
        await proxy?.close();
        await nbdkit?.stop("SIGKILL");
      }
    },
  );
});
