import crypto from "node:crypto";
import fs from "node:fs";
import os from "node:os";
import path from "node:path";
import { afterAll, describe, expect, it } from "vitest";
import { Pool, poolCore } from "../store/pool.js";
import { directIoFromEnv, openPoolDevice } from "../store/pool-device.js";
import { acceptEveryReservation } from "../store/reservations.js";
import type { Volume } from "../store/volume.js";
import { readVolume, writeVolume } from "../store/volume-io.js";
import type { DeviceIo } from "./device-io.js";
import { ioEngineReport } from "./select.js";
import { ThreadPoolIo } from "./threadpool-io.js";
import { uringAddon } from "./uring-addon.js";
import { UringIo } from "./uring-io.js";

const dir = fs.mkdtempSync(path.join(os.tmpdir(), "keelson-direct-io-"));
afterAll(() => fs.rmSync(dir, { recursive: true, force: true }));

/** io_uring must be there wherever the addon is required to build (CI); elsewhere its absence is said, not hidden. */
function uringOrExplain(): UringIo | null {
  const { addon, why } = uringAddon();
  if (addon) return new UringIo(addon, 64);
  if (process.env.CI || process.env.KEELSON_REQUIRE_IO_URING === "1") throw new Error(`io_uring engine unavailable: ${why}`);
  console.error(`!!!!!!!! O_DIRECT through io_uring not tested: ${why} !!!!!!!!`);
  return null;
}

const rw = (io: DeviceIo, op: "read" | "write", fd: number, buf: Buffer, offset: number, length: number, pos: number) =>
  new Promise<number>((resolve, reject) =>
    io[op](fd, buf, offset, length, pos, (error, n) => (error ? reject(error) : resolve(n))),
  );

/** The open flags of `fd` in this process, from /proc. */
function openFlags(fd: number): number {
  const info = fs.readFileSync(`/proc/self/fdinfo/${fd}`, "utf8");
  return Number.parseInt(/flags:\s+([0-7]+)/.exec(info)?.[1] ?? "0", 8);
}

function read(pool: Pool, v: Volume, offset: number, length: number): Promise<Buffer> {
  const buf = Buffer.alloc(length);
  return new Promise((resolve, reject) => readVolume(pool, v, offset, length, buf, 0, (e) => (e ? reject(e) : resolve(buf))));
}
function write(pool: Pool, v: Volume, offset: number, data: Buffer): Promise<void> {
  return new Promise((resolve, reject) => writeVolume(pool, v, offset, data, false, (e) => (e ? reject(e) : resolve())));
}

function file(bytes: number, data?: Buffer): string {
  const f = path.join(dir, `f-${crypto.randomUUID()}`);
  fs.writeFileSync(f, data ?? Buffer.alloc(bytes));
  return f;
}

describe("O_DIRECT", () => {
  it("io_uring: through an O_DIRECT fd, writes from unaligned memory and reads at any place and length return exactly the file's bytes", async () => {
    const io = uringOrExplain();
    if (!io) return;
    const size = 1024 * 1024;
    const model = crypto.randomBytes(size);
    const f = file(size, model);
    const opened = io.openDirect(f);
    if (opened.fd === null) throw new Error(opened.why);
    try {
      expect(openFlags(opened.fd) & fs.constants.O_DIRECT).toBe(fs.constants.O_DIRECT);
      // Writes on the block grid, from memory at odd addresses (a slice of a larger buffer).
      const writes = Array.from({ length: 64 }, (_, i) => {
        const blocks = 1 + (i % 5);
        const pos = ((i * 37) % (size / 4096 - 5)) * 4096;
        const carrier = crypto.randomBytes(blocks * 4096 + 3);
        return { pos, carrier, offset: 1 + (i % 3), length: blocks * 4096 };
      });
      // One at a time in a random order would do as well; in flight together exercises the copies' lifetimes.
      for (const w of writes) w.carrier.copy(model, w.pos, w.offset, w.offset + w.length);
      for (const w of writes) expect(await rw(io, "write", opened.fd, w.carrier, w.offset, w.length, w.pos)).toBe(w.length);
      const reads = await Promise.all(
        Array.from({ length: 200 }, async (_, i) => {
          const pos = (i * 7919 * 13) % (size - 20_000);
          const length = 1 + ((i * 104_729) % 20_000);
          const got = Buffer.alloc(length + 5);
          const n = await rw(io, "read", opened.fd as number, got, 5, length, pos);
          return n === length && got.subarray(5).equals(model.subarray(pos, pos + length));
        }),
      );
      expect(reads.every(Boolean)).toBe(true);
      // Past the end: what there is, then nothing.
      const tail = Buffer.alloc(8192);
      expect(await rw(io, "read", opened.fd, tail, 0, 8192, size - 100)).toBe(100);
      expect(tail.subarray(0, 100).equals(model.subarray(size - 100))).toBe(true);
      expect(await rw(io, "read", opened.fd, tail, 0, 10, size + 4096)).toBe(0);
      expect(fs.readFileSync(f).equals(model)).toBe(true);
    } finally {
      opened.close();
      io.close();
    }
  });

  it("io_uring: a write off the block grid through an O_DIRECT fd fails EINVAL and changes nothing; once closed, the fd's number is a plain fd again", async () => {
    const io = uringOrExplain();
    if (!io) return;
    const f = file(65536);
    const opened = io.openDirect(f);
    if (opened.fd === null) throw new Error(opened.why);
    const { fd } = opened;
    await expect(rw(io, "write", fd, Buffer.alloc(100, 1), 0, 100, 4096)).rejects.toMatchObject({ code: "EINVAL" });
    await expect(rw(io, "write", fd, Buffer.alloc(4096, 1), 0, 4096, 512 + 4096)).rejects.toMatchObject({ code: "EINVAL" });
    expect(fs.readFileSync(f).equals(Buffer.alloc(65536))).toBe(true);
    opened.close();
    opened.close(); // twice is harmless: the number may be another file's by now
    // The lowest free number is the one just closed: a buffered fd now, which takes any write.
    const plain = fs.openSync(f, "r+");
    try {
      expect(plain).toBe(fd);
      expect(await rw(io, "write", plain, Buffer.from("hello"), 0, 5, 3)).toBe(5);
      expect(fs.readFileSync(f).subarray(3, 8).toString()).toBe("hello");
    } finally {
      fs.closeSync(plain);
      io.close();
    }
  });

  it("the thread-pool engine cannot align, so it opens no O_DIRECT fd and says why; a pool asked for direct I/O on it is UNAVAILABLE", () => {
    const io = new ThreadPoolIo();
    const opened = io.openDirect();
    expect(opened.fd).toBeNull();
    expect(opened.why).toMatch(/thread-pool engine cannot align/);
    expect(() => openPoolDevice({ path: file(1 << 20), io, directIo: true })).toThrow(
      expect.objectContaining({ code: "UNAVAILABLE", message: expect.stringMatching(/direct I\/O on pool .*cannot align/) }),
    );
  });

  it("a pool opened with direct I/O reads and writes its volumes' blocks through an O_DIRECT fd and its metadata through the buffered one, and reads back after a reopen", async () => {
    const io = uringOrExplain();
    if (!io) return;
    io.close(); // the pool uses the process's engine
    const poolPath = path.join(dir, `pool-${crypto.randomUUID()}`);
    const open = () =>
      Pool.open({ path: poolPath, createSizeBytes: 256 * 1024 * 1024, admit: acceptEveryReservation, directIo: true });
    if (ioEngineReport().engine !== "io_uring") {
      // This run's process engine is the thread pool (KEELSON_IO=threadpool): the pool must refuse, not fall back silently.
      await expect(open()).rejects.toMatchObject({ code: "UNAVAILABLE" });
      return;
    }
    let pool = await open();
    const { device } = poolCore(pool);
    expect(device.directIo).toBe(true);
    expect(device.dataFd).not.toBe(device.fd);
    expect(openFlags(device.dataFd) & fs.constants.O_DIRECT).toBe(fs.constants.O_DIRECT);
    expect(openFlags(device.fd) & fs.constants.O_DIRECT).toBe(0);
    const data = crypto.randomBytes(3 * 4096 + 512);
    let v = await pool.createVolume({ name: "v", sizeBytes: 16 * 1024 * 1024 });
    await write(pool, v, 5 * 4096, data.subarray(0, 3 * 4096));
    await write(pool, v, 9 * 4096 + 100, data.subarray(0, 512)); // read-modify-write of one block
    await pool.flush();
    await pool.close();
    pool = await open();
    try {
      v = pool.getVolume("v");
      expect((await read(pool, v, 5 * 4096, 3 * 4096)).equals(data.subarray(0, 3 * 4096))).toBe(true);
      expect((await read(pool, v, 9 * 4096 + 100, 512)).equals(data.subarray(0, 512))).toBe(true);
      expect((await read(pool, v, 9 * 4096, 100)).equals(Buffer.alloc(100))).toBe(true);
    } finally {
      await pool.close();
    }
  });

  it("KEELSON_DIRECT_IO: on, 1, off, 0 or unset; anything else is INVALID_ARGUMENT", () => {
    expect(directIoFromEnv({ KEELSON_DIRECT_IO: "1" })).toBe(true);
    expect(directIoFromEnv({ KEELSON_DIRECT_IO: "on" })).toBe(true);
    expect(directIoFromEnv({ KEELSON_DIRECT_IO: "off" })).toBe(false);
    expect(directIoFromEnv({})).toBe(false);
    expect(() => directIoFromEnv({ KEELSON_DIRECT_IO: "yes" })).toThrow(expect.objectContaining({ code: "INVALID_ARGUMENT" }));
  });
});
