import crypto from "node:crypto";
import fs from "node:fs";
import path from "node:path";
import { describe, expect, it } from "vitest";
import { allocationMap } from "./helpers/allocation-map.js";
import { startDaemon, type TestDaemon, tempDir } from "./helpers/daemon.js";
import { canRun } from "./helpers/env.js";
import { scrape } from "./helpers/metrics.js";
import { run } from "./helpers/process.js";

// NBD_CMD_BLOCK_STATUS (base:allocation) seen from real clients: what they
// skip is counted by the server, and what they map is checked against what
// was written.

const MIB = 1024 * 1024;
const GIB = 1024 * MIB;
/** nbdcopy's request size, pinned so that what it may read past the data is known. */
const REQUEST_BYTES = 256 * 1024;

async function readBytes(d: TestDaemon, volume: string): Promise<number> {
  return (await scrape(d)).get(`keelson_volume_read_bytes_total{volume="${volume}"}`) ?? Number.NaN;
}

describe("block status (base:allocation)", () => {
  it("nbdcopy of a 4 GiB volume holding 64 MiB of data reads only the allocated part (counted by the server) and copies it byte for byte", async (t) => {
    if (!canRun({ tools: ["nbdcopy", "nbdinfo"] }, t.task.name)) return t.skip();
    using dir = tempDir("keelson-bs-copy-");
    await using d = await startDaemon({
      poolPath: path.join(dir.path, "pool.img"),
      poolSize: "1G",
      dir: dir.path,
      extraArgs: ["--metrics-listen", "127.0.0.1:0", "--overcommit-percent", "1000"],
    });
    await d.client().createVolume({ name: "sparse", sizeBytes: 4 * GIB });
    // 16 islands of 4 MiB spread over the 4 GiB, written from a sparse source that nbdcopy copies island by island.
    const src = path.join(dir.path, "src.raw");
    const islands = Array.from({ length: 16 }, (_, i) => i * 256 * MIB + (i % 4) * 4096);
    const fd = fs.openSync(src, "w");
    fs.ftruncateSync(fd, 4 * GIB);
    const data = new Map<number, Buffer>();
    for (const at of islands) {
      const bytes = crypto.randomBytes(4 * MIB);
      data.set(at, bytes);
      fs.writeSync(fd, bytes, 0, bytes.length, at);
    }
    fs.closeSync(fd);
    await run("nbdcopy", ["--destination-is-zero", src, d.uri("sparse")]);

    const map = await allocationMap(d.uri("sparse"));
    expect(map.filter((r) => r.type === 0).reduce((n, r) => n + r.length, 0)).toBe(64 * MIB);

    const before = await readBytes(d, "sparse");
    const back = path.join(dir.path, "back.raw");
    await run("nbdcopy", [`--request-size=${REQUEST_BYTES}`, d.uri("sparse"), back]);
    const read = (await readBytes(d, "sparse")) - before;
    console.log(`nbdcopy of a 4 GiB volume with 64 MiB of data: the server served ${(read / MIB).toFixed(2)} MiB of reads`);
    // nbdcopy reads whole requests: an island that does not start on a request boundary costs it up to one more at each end.
    expect(read).toBeGreaterThanOrEqual(64 * MIB);
    expect(read).toBeLessThanOrEqual(64 * MIB + islands.length * 2 * REQUEST_BYTES);

    expect(fs.statSync(back).size).toBe(4 * GIB);
    const out = fs.openSync(back, "r");
    try {
      const got = Buffer.alloc(4 * MIB);
      for (const [at, bytes] of data) {
        fs.readSync(out, got, 0, got.length, at);
        expect(got.equals(bytes), `island at ${at}`).toBe(true);
      }
      // Between the islands: zeros (16 windows of 1 MiB, one in each gap).
      const window = Buffer.alloc(MIB);
      for (const at of islands) {
        fs.readSync(out, window, 0, MIB, at + 100 * MIB);
        expect(
          window.every((b) => b === 0),
          `gap after ${at}`,
        ).toBe(true);
      }
    } finally {
      fs.closeSync(out);
    }
  });

  it("nbdinfo --map and qemu-img map show written runs as data and never-written, trimmed and zeroed runs as holes; a snapshot keeps its own map", async (t) => {
    if (!canRun({ tools: ["nbdinfo", "qemu-io", "qemu-img"] }, t.task.name)) return t.skip();
    using dir = tempDir("keelson-bs-map-");
    await using d = await startDaemon({ poolPath: path.join(dir.path, "pool.img"), poolSize: "1G", dir: dir.path });
    const c = d.client();
    await c.createVolume({ name: "m", sizeBytes: 64 * MIB });
    const io = (cmd: string) => run("qemu-io", ["-f", "raw", "-c", cmd, d.uri("m")]);
    await io("write -P 0x11 0 8k");
    await io("write -P 0x22 1M 64k");
    await io("write -P 0x33 3M 2M");
    await c.createSnapshot({ volume: "m", name: "s1" });
    // After the snapshot: trim part of one run, zero part of another, write a new one.
    await io("discard 1M 32k");
    await io("write -z -u 3M 1M");
    await io("write -P 0x44 10M 4k");

    expect(await allocationMap(d.uri("m"))).toEqual([
      { offset: 0, length: 8192, type: 0 },
      { offset: 8192, length: MIB - 8192 + 32 * 1024, type: 3 },
      { offset: MIB + 32 * 1024, length: 32 * 1024, type: 0 },
      { offset: MIB + 64 * 1024, length: 4 * MIB - (MIB + 64 * 1024), type: 3 },
      { offset: 4 * MIB, length: MIB, type: 0 },
      { offset: 5 * MIB, length: 5 * MIB, type: 3 },
      { offset: 10 * MIB, length: 4096, type: 0 },
      { offset: 10 * MIB + 4096, length: 54 * MIB - 4096, type: 3 },
    ]);
    expect(await allocationMap(d.uri("m@s1"))).toEqual([
      { offset: 0, length: 8192, type: 0 },
      { offset: 8192, length: MIB - 8192, type: 3 },
      { offset: MIB, length: 64 * 1024, type: 0 },
      { offset: MIB + 64 * 1024, length: 2 * MIB - 64 * 1024, type: 3 },
      { offset: 3 * MIB, length: 2 * MIB, type: 0 },
      { offset: 5 * MIB, length: 59 * MIB, type: 3 },
    ]);
    // qemu's client reads the same map; it lists the data runs with their content where it is.
    const qemu = JSON.parse((await run("qemu-img", ["map", "--output=json", d.uri("m")])).stdout) as Array<{
      start: number;
      length: number;
      data: boolean;
    }>;
    expect(qemu.filter((r) => r.data).map((r) => [r.start, r.length])).toEqual([
      [0, 8192],
      [MIB + 32 * 1024, 32 * 1024],
      [4 * MIB, MIB],
      [10 * MIB, 4096],
    ]);
    // What the map calls data reads back as written; what it calls a hole reads as zeros.
    await io(`read -P 0x22 ${MIB + 32 * 1024} 32k`);
    await io("read -P 0 1M 32k");
    await io("read -P 0 3M 1M");
    await io("read -P 0x33 4M 1M");
  });
});
