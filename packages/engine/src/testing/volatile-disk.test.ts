import fs from "node:fs";
import os from "node:os";
import path from "node:path";
import { afterEach, describe, expect, it } from "vitest";
import { ReplicaClient } from "../replication/replica-client.js";
import { seededRandom, testSeed } from "./random.js";
import { CACHE_LINE_BYTES, SECTOR_BYTES } from "./volatile-cache.js";
import { VOLATILE_DISK_EXPORT, VolatileDisk } from "./volatile-disk.js";

const SIZE = 4 * 1024 * 1024;
const dirs: string[] = [];

afterEach(() => {
  for (const d of dirs.splice(0)) fs.rmSync(d, { recursive: true, force: true });
});

function medium(): { file: string; socket: string } {
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), "volatile-disk-"));
  dirs.push(dir);
  const file = path.join(dir, "disk.img");
  fs.writeFileSync(file, Buffer.alloc(0));
  fs.truncateSync(file, SIZE);
  return { file, socket: path.join(dir, "disk.sock") };
}

function line(fill: number): Buffer {
  return Buffer.alloc(CACHE_LINE_BYTES, fill);
}

describe("volatile test disk", () => {
  it("a write is read back at once but reaches the medium only on FLUSH or FUA; a power cut then keeps every flushed line", async () => {
    const seed = testSeed();
    const { file, socket } = medium();
    const disk = await VolatileDisk.start({
      backingFile: file,
      socketPath: socket,
      random: seededRandom(seed),
      earlyWriteBackChance: 0,
    });
    const c = await ReplicaClient.connect(socket, VOLATILE_DISK_EXPORT, 5_000);
    await c.write(0, line(1), false);
    expect((await c.read(0, CACHE_LINE_BYTES)).equals(line(1))).toBe(true);
    expect(fs.readFileSync(file).subarray(0, CACHE_LINE_BYTES).equals(line(0))).toBe(true);
    await c.flush();
    expect(fs.readFileSync(file).subarray(0, CACHE_LINE_BYTES).equals(line(1))).toBe(true);
    await c.write(CACHE_LINE_BYTES, line(2), true);
    expect(
      fs
        .readFileSync(file)
        .subarray(CACHE_LINE_BYTES, 2 * CACHE_LINE_BYTES)
        .equals(line(2)),
    ).toBe(true);
    // 512 unflushed lines: a power cut keeps some, tears some and drops some (seeded: about a third each).
    for (let i = 0; i < 512; i++) await c.write((8 + i) * CACHE_LINE_BYTES, line(3), false);
    expect(disk.cachedLines).toBe(512);
    const report = await disk.powerCut();
    console.log(`volatile disk seed=${seed}: power cut ${JSON.stringify(report)}`);
    expect(report.cachedLines).toBe(512);
    expect(report.persistedLines).toBeGreaterThan(0);
    expect(report.tornLines).toBeGreaterThan(0);
    expect(report.droppedLines).toBeGreaterThan(0);
    await expect(c.read(0, CACHE_LINE_BYTES)).rejects.toThrow();
    c.close();
    const image = fs.readFileSync(file);
    expect(image.subarray(0, CACHE_LINE_BYTES).equals(line(1))).toBe(true);
    expect(image.subarray(CACHE_LINE_BYTES, 2 * CACHE_LINE_BYTES).equals(line(2))).toBe(true);
    // Every sector holds the old or the new content, never anything else.
    let newSectors = 0;
    for (let at = 8 * CACHE_LINE_BYTES; at < (8 + 512) * CACHE_LINE_BYTES; at += SECTOR_BYTES) {
      const sector = image.subarray(at, at + SECTOR_BYTES);
      const fill = sector[0] as number;
      expect([0, 3]).toContain(fill);
      expect(sector.equals(Buffer.alloc(SECTOR_BYTES, fill))).toBe(true);
      if (fill === 3) newSectors++;
    }
    const sectorsPerLine = CACHE_LINE_BYTES / SECTOR_BYTES;
    expect(newSectors).toBeGreaterThan(report.persistedLines * sectorsPerLine);
    expect(newSectors).toBeLessThan((report.persistedLines + report.tornLines) * sectorsPerLine);
  });

  it("past its bound the cache writes back its oldest lines; a partial write is merged with the medium's line", async () => {
    const { file, socket } = medium();
    fs.writeFileSync(file, Buffer.alloc(CACHE_LINE_BYTES, 7), { flag: "r+" });
    const disk = await VolatileDisk.start({
      backingFile: file,
      socketPath: socket,
      random: seededRandom(1),
      maxCachedBytes: 4 * CACHE_LINE_BYTES,
      earlyWriteBackChance: 0,
    });
    const c = await ReplicaClient.connect(socket, VOLATILE_DISK_EXPORT, 5_000);
    await c.write(SECTOR_BYTES, Buffer.alloc(SECTOR_BYTES, 9), false);
    const expected = Buffer.alloc(CACHE_LINE_BYTES, 7);
    expected.fill(9, SECTOR_BYTES, 2 * SECTOR_BYTES);
    expect((await c.read(0, CACHE_LINE_BYTES)).equals(expected)).toBe(true);
    for (let i = 1; i <= 4; i++) await c.write(i * CACHE_LINE_BYTES, line(i), false);
    expect(disk.cachedLines).toBe(4);
    // Line 0 was the oldest: it is on the medium, merged.
    expect(fs.readFileSync(file).subarray(0, CACHE_LINE_BYTES).equals(expected)).toBe(true);
    c.close();
    await disk.close();
    expect(
      fs
        .readFileSync(file)
        .subarray(4 * CACHE_LINE_BYTES, 5 * CACHE_LINE_BYTES)
        .equals(line(4)),
    ).toBe(true);
  });

  it("a hung disk answers nothing until it resumes; a slow one answers after its delay", async () => {
    const { file, socket } = medium();
    const disk = await VolatileDisk.start({
      backingFile: file,
      socketPath: socket,
      random: seededRandom(2),
      latency: { kind: "hung" },
    });
    const c = await ReplicaClient.connect(socket, VOLATILE_DISK_EXPORT, 10_000);
    let answered = false;
    const write = c.write(0, line(5), false).then(() => {
      answered = true;
    });
    await new Promise((r) => setTimeout(r, 300));
    expect(answered).toBe(false);
    disk.setLatency({ kind: "slow", minMs: 50, maxMs: 60 });
    await write;
    expect(disk.stats.maxWaitMs).toBeGreaterThanOrEqual(300);
    const started = Date.now();
    await c.flush();
    expect(Date.now() - started).toBeGreaterThanOrEqual(45);
    c.close();
    await disk.close();
    expect(fs.readFileSync(file).subarray(0, CACHE_LINE_BYTES).equals(line(5))).toBe(true);
  });
});
