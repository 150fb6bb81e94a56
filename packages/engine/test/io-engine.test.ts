// The disk I/O engine keelsond runs on: chosen at start (--io, KEELSON_IO,
// else auto), reported in GetNode, the CLI and the metrics, and the same data
// whichever engine wrote it.
import crypto from "node:crypto";
import fs from "node:fs";
import path from "node:path";
import { describe, expect, it } from "vitest";
import { uringAddon } from "../src/device-io/uring-addon.js";
import { startDaemon, tempDir } from "./helpers/daemon.js";
import { scrape } from "./helpers/metrics.js";
import { NbdTestClient } from "./helpers/nbd-client.js";

const MIB = 1024 * 1024;

describe("disk I/O engine", () => {
  it("a pool written on io_uring reads back the same on the thread pool and the other way round; each engine is reported in GetNode and /metrics; an unknown --io is refused at start", async () => {
    const { addon, why } = uringAddon();
    if (!addon) {
      if (process.env.CI) throw new Error(`io_uring unavailable in CI: ${why}`);
      console.error(`!!!!!!!! io_uring not available here (${why}): only the thread pool is checked !!!!!!!!`);
    }
    using dir = tempDir("keelson-io-engine-");
    const poolPath = path.join(dir.path, "pool.img");
    const engines = addon ? (["io_uring", "threadpool", "io_uring"] as const) : (["threadpool", "threadpool"] as const);
    const image = crypto.randomBytes(8 * MIB);
    let previous: Buffer | null = null;
    for (const [round, engine] of engines.entries()) {
      await using d = await startDaemon({
        poolPath,
        poolSize: "256M",
        dir: dir.path,
        extraArgs: ["--io", engine, "--metrics-listen", "127.0.0.1:0"],
      });
      const c = d.client();
      const node = await c.getNode();
      expect(node.ioEngine).toBe(engine);
      expect(node.ioEngineNote).toBe(`asked for (${engine})`);
      const m = await scrape(d);
      expect(m.get(`keelson_io_engine_info{engine="${engine}",note="asked for (${engine})"}`)).toBe(1);
      expect(m.get(`keelson_io_requests_in_flight{engine="${engine}"}`)).toBe(0);
      if (round === 0) await c.createVolume({ name: "v", sizeBytes: 16 * MIB });
      const nbd = await NbdTestClient.open(d.nbdAddress, "v");
      if (previous) {
        // What the previous engine wrote and flushed, read by this one.
        const got = await nbd.read(0, 8 * MIB);
        expect(got.error).toBe(0);
        expect(Buffer.compare(got.data, previous)).toBe(0);
      }
      // A fresh pattern, written in pieces of 4 KiB to 1 MiB at scattered places, then flushed.
      const next = Buffer.from(image);
      next.writeUInt32BE(round, 0);
      for (let at = 0; at < next.length; ) {
        const len = Math.min(next.length - at, 4096 << (at % 9));
        expect((await nbd.write(at, next.subarray(at, at + len))).error).toBe(0);
        at += len;
      }
      expect((await nbd.flush()).error).toBe(0);
      await nbd.disconnect();
      previous = next;
    }

    // Refused at start with a clear message: an unknown engine (usage error, exit 2).
    await expect(startDaemon({ poolPath, dir: dir.path, extraArgs: ["--io", "aio"] })).rejects.toThrow(
      /--io "aio": expected io_uring, threadpool or auto/,
    );
  }, 60_000);

  it("--direct-io on: the pool's blocks go through an O_DIRECT fd (its metadata does not), GetNode says so, and data survives a restart with direct I/O off; on the thread pool it is refused at start, as is a bad value", async () => {
    const { addon, why } = uringAddon();
    using dir = tempDir("keelson-direct-io-");
    const poolPath = path.join(dir.path, "pool.img");
    if (!addon) {
      if (process.env.CI) throw new Error(`io_uring unavailable in CI: ${why}`);
      console.error(`!!!!!!!! io_uring not available here (${why}): --direct-io on is not checked !!!!!!!!`);
    } else {
      const data = crypto.randomBytes(2 * MIB);
      {
        await using d = await startDaemon({ poolPath, poolSize: "256M", dir: dir.path, extraArgs: ["--direct-io", "on"] });
        const c = d.client();
        expect((await c.getNode()).pool.directIo).toBe(true);
        // Two fds name the pool: one O_DIRECT (the blocks), one not (superblock and metadata).
        const poolFds = fs
          .readdirSync(`/proc/${d.pid}/fd`)
          .filter((fd) => fs.readlinkSync(`/proc/${d.pid}/fd/${fd}`) === poolPath)
          .map((fd) =>
            Number.parseInt(/flags:\s+([0-7]+)/.exec(fs.readFileSync(`/proc/${d.pid}/fdinfo/${fd}`, "utf8"))?.[1] ?? "0", 8),
          );
        expect(poolFds.map((flags) => (flags & fs.constants.O_DIRECT) !== 0).sort()).toEqual([false, true]);
        await c.createVolume({ name: "v", sizeBytes: 16 * MIB });
        const nbd = await NbdTestClient.open(d.nbdAddress, "v");
        expect((await nbd.write(4096, data)).error).toBe(0);
        expect((await nbd.write(3 * MIB + 100, data.subarray(0, 1000))).error).toBe(0); // not on the block grid
        expect((await nbd.flush()).error).toBe(0);
        const back = await nbd.read(4096, 2 * MIB);
        expect(back.data.equals(data)).toBe(true);
        await nbd.disconnect();
      }
      await using d = await startDaemon({ poolPath, dir: dir.path, extraArgs: ["--direct-io", "off"] });
      expect((await d.client().getNode()).pool.directIo).toBe(false);
      const nbd = await NbdTestClient.open(d.nbdAddress, "v");
      expect((await nbd.read(4096, 2 * MIB)).data.equals(data)).toBe(true);
      expect((await nbd.read(3 * MIB + 100, 1000)).data.equals(data.subarray(0, 1000))).toBe(true);
      await nbd.disconnect();
    }
    await expect(
      startDaemon({ poolPath, poolSize: "256M", dir: dir.path, extraArgs: ["--io", "threadpool", "--direct-io", "on"] }),
    ).rejects.toThrow(/direct I\/O on pool .*thread-pool engine cannot align/);
    await expect(startDaemon({ poolPath, dir: dir.path, extraArgs: ["--direct-io", "yes"] })).rejects.toThrow(
      /--direct-io "yes": expected on or off/,
    );
  }, 60_000);
});
