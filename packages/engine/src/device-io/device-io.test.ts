import { execFile } from "node:child_process";
import crypto from "node:crypto";
import fs from "node:fs";
import os from "node:os";
import path from "node:path";
import { promisify } from "node:util";
import { KeelsonError } from "@keelson/sdk";
import { afterAll, describe, expect, it } from "vitest";
import { type DeviceIo, DeviceIoError } from "./device-io.js";
import { chooseIoEngine, deviceIo, ioEngineFromEnv, useIoEngine } from "./select.js";
import { ThreadPoolIo } from "./threadpool-io.js";
import { ADDON_PATH, probeUring, type UringAddon, uringAddon } from "./uring-addon.js";
import { UringIo } from "./uring-io.js";

const exec = promisify(execFile);
const dir = fs.mkdtempSync(path.join(os.tmpdir(), "keelson-device-io-"));
afterAll(() => fs.rmSync(dir, { recursive: true, force: true }));

/** io_uring must be there wherever the addon is required to build (CI); elsewhere its absence is said, not hidden. */
function uringOrExplain(): boolean {
  const { addon, why } = uringAddon();
  if (addon) return true;
  if (process.env.CI || process.env.KEELSON_REQUIRE_IO_URING === "1") throw new Error(`io_uring engine unavailable: ${why}`);
  console.error(`!!!!!!!! io_uring engine not tested: ${why} !!!!!!!!`);
  return false;
}

const rw = (io: DeviceIo, op: "read" | "write", fd: number, buf: Buffer, pos: number) =>
  new Promise<number>((resolve, reject) =>
    io[op](fd, buf, 0, buf.length, pos, (error, n) => (error ? reject(error) : resolve(n))),
  );
const sync = (io: DeviceIo, fd: number) =>
  new Promise<void>((resolve, reject) => io.fdatasync(fd, (error) => (error ? reject(error) : resolve())));

/** The addon, where {@link uringOrExplain} said it is there. */
const realAddon = (): UringAddon => uringAddon().addon as UringAddon;

/** A fresh file of `bytes` random bytes, open for reading and writing. */
function randomFile(bytes: number): { fd: number; data: Buffer } {
  const file = path.join(dir, `f-${crypto.randomUUID()}`);
  const data = crypto.randomBytes(bytes);
  fs.writeFileSync(file, data);
  return { fd: fs.openSync(file, "r+"), data };
}

/** Writes fresh bytes through `io`, flushes, reads them back and checks they are the same. */
async function roundTrip(io: DeviceIo): Promise<void> {
  const { fd } = randomFile(4096);
  try {
    const data = crypto.randomBytes(4096);
    expect(await rw(io, "write", fd, data, 0)).toBe(4096);
    await sync(io, fd);
    const got = Buffer.alloc(4096);
    expect(await rw(io, "read", fd, got, 0)).toBe(4096);
    expect(got.equals(data)).toBe(true);
  } finally {
    fs.closeSync(fd);
  }
}

function engines(): Array<[string, () => DeviceIo]> {
  const list: Array<[string, () => DeviceIo]> = [["threadpool", () => new ThreadPoolIo()]];
  const { addon } = uringAddon();
  if (addon) list.push(["io_uring (capacity 8: most requests wait for a token)", () => new UringIo(addon, 8)]);
  return list;
}

describe("device I/O engines", () => {
  it("the io_uring addon loads here (CI requires it)", () => {
    if (!uringOrExplain()) return;
    expect(fs.existsSync(ADDON_PATH)).toBe(true);
    const { io, report } = chooseIoEngine("auto");
    expect(report.engine).toBe("io_uring");
    io.close();
  });

  it("io_uring: reads the page cache answers complete in the turn of their submit (no wait for the event loop's eventfd wake-up), and the rest still complete", async () => {
    if (!uringOrExplain()) return;
    const io = new UringIo(realAddon(), 8);
    const { fd, data } = randomFile(64 * 1024);
    try {
      // randomFile wrote through the page cache: every read below hits it.
      const bufs = Array.from({ length: 16 }, () => Buffer.alloc(4096));
      const done: number[] = [];
      bufs.forEach((b, i) => {
        io.read(fd, b, 0, 4096, i * 4096, (error, n) => {
          expect(error).toBeNull();
          expect(n).toBe(4096);
          done.push(i);
        });
      });
      // Microtasks only: the event loop does not come round, so only completions taken at submit can have run.
      for (let i = 0; i < 10 && done.length === 0; i++) await Promise.resolve();
      expect(done.length, "completions delivered before the event loop turned").toBeGreaterThan(0);
      const deadline = Date.now() + 10_000;
      while (done.length < 16 && Date.now() < deadline) await new Promise((r) => setImmediate(r));
      expect(done.sort((a, b) => a - b)).toEqual(bufs.map((_, i) => i));
      for (const [i, b] of bufs.entries()) expect(b.equals(data.subarray(i * 4096, (i + 1) * 4096))).toBe(true);
      expect(io.inFlight).toBe(0);
    } finally {
      io.close();
      fs.closeSync(fd);
    }
  });

  for (const op of ["read", "write"] as const)
    it(`io_uring: a loop of 1,000 sequential cached ${op}s still lets the event loop turn (${op === "read" ? "completions in the submit" : "inline writes"} are bounded per turn)`, async () => {
      if (!uringOrExplain()) return;
      const io = new UringIo(realAddon(), 8);
      const { fd } = randomFile(64 * 1024);
      try {
        let turns = 0;
        let done = false;
        const tick = (): void => {
          turns++;
          if (!done) setImmediate(tick);
        };
        setImmediate(tick);
        const buf = crypto.randomBytes(4096);
        for (let i = 0; i < 1000; i++) await rw(io, op, fd, buf, (i % 16) * 4096);
        done = true;
        expect(turns, "event-loop turns during the loop").toBeGreaterThan(5);
      } finally {
        io.close();
        fs.closeSync(fd);
      }
    });

  it("io_uring: a small buffered write is written at once (in the file before the call returns, nothing in the ring, its callback after the call), also with a request in the ring; one over 64 KiB goes through the ring", async () => {
    if (!uringOrExplain()) return;
    const io = new UringIo(realAddon(), 8);
    const { fd } = randomFile(256 * 1024);
    try {
      const data = crypto.randomBytes(4096);
      let called = false;
      const done = new Promise<number>((resolve, reject) =>
        io.write(fd, data, 0, 4096, 8192, (error, n) => {
          called = true;
          return error ? reject(error) : resolve(n);
        }),
      );
      expect(called, "callback run inside the call").toBe(false);
      expect(io.inFlight).toBe(0);
      const now = Buffer.alloc(4096);
      fs.readSync(fd, now, 0, 4096, 8192);
      expect(now.equals(data)).toBe(true);
      expect(await done).toBe(4096);

      // A read in the ring: the write made after it does not wait for it (requests in flight together have no order).
      const reading = rw(io, "read", fd, Buffer.alloc(4096), 0);
      const second = crypto.randomBytes(4096);
      const writing = rw(io, "write", fd, second, 16384);
      expect(io.inFlight).toBe(1);
      fs.readSync(fd, now, 0, 4096, 16384);
      expect(now.equals(second)).toBe(true);
      await Promise.all([reading, writing]);
      const big = rw(io, "write", fd, crypto.randomBytes(128 * 1024), 65536);
      expect(io.inFlight).toBe(1);
      expect(await big).toBe(128 * 1024);
      expect(io.inFlight).toBe(0);
    } finally {
      io.close();
      fs.closeSync(fd);
    }
  });

  it("io_uring: an inline write that fails (a closed fd) fails in its callback with the errno, not by throwing", async () => {
    if (!uringOrExplain()) return;
    const io = new UringIo(realAddon(), 8);
    const { fd } = randomFile(4096);
    fs.closeSync(fd);
    try {
      await expect(rw(io, "write", fd, Buffer.alloc(4096), 0)).rejects.toMatchObject({ code: "EBADF", syscall: "pwrite" });
    } finally {
      io.close();
    }
  });

  for (const [name, make] of engines()) {
    it(`${name}: 2,000 concurrent writes of random sizes and places, a flush, then 2,000 concurrent reads return exactly what was written`, async () => {
      const io = make();
      const file = path.join(dir, `rw-${crypto.randomUUID()}`);
      const size = 16 * 1024 * 1024;
      fs.writeFileSync(file, Buffer.alloc(0));
      fs.truncateSync(file, size);
      const fd = fs.openSync(file, "r+");
      try {
        const model = Buffer.alloc(size);
        const writes: Array<{ pos: number; data: Buffer }> = [];
        // Non-overlapping 4 KiB-aligned slots, so the order of completion does not matter.
        const slots = crypto.randomBytes(2000 * 4);
        const used = new Set<number>();
        for (let i = 0; i < 2000; i++) {
          let slot = slots.readUInt32LE(i * 4) % (size / 4096 - 16);
          while (used.has(slot)) slot = (slot + 1) % (size / 4096 - 16);
          used.add(slot);
          const data = crypto.randomBytes(1 + (slots[i * 4] as number) * 16);
          writes.push({ pos: slot * 4096, data });
          data.copy(model, slot * 4096);
        }
        const written = await Promise.all(writes.map((w) => rw(io, "write", fd, w.data, w.pos)));
        expect(written).toEqual(writes.map((w) => w.data.length));
        await sync(io, fd);
        const reads = await Promise.all(
          writes.map(async (w) => {
            const got = Buffer.alloc(w.data.length);
            expect(await rw(io, "read", fd, got, w.pos)).toBe(w.data.length);
            return got.equals(w.data);
          }),
        );
        expect(reads.every(Boolean)).toBe(true);
        expect(fs.readFileSync(file).equals(model)).toBe(true);
        expect(io.inFlight).toBe(0);
      } finally {
        fs.closeSync(fd);
        io.close();
      }
    });

    it(`${name}: a failed request is an errno-shaped error (EBADF) and the engine goes on`, async () => {
      const io = make();
      const error = await rw(io, "read", 1_000_000, Buffer.alloc(16), 0).catch((e: unknown) => e);
      expect(error).toMatchObject({ code: "EBADF" });
      const file = path.join(dir, `ok-${crypto.randomUUID()}`);
      fs.writeFileSync(file, "hello");
      const fd = fs.openSync(file, "r");
      const got = Buffer.alloc(5);
      expect(await rw(io, "read", fd, got, 0)).toBe(5);
      expect(got.toString()).toBe("hello");
      // Past the end of the file: 0 bytes, no error (the store treats that as a short read).
      expect(await rw(io, "read", fd, Buffer.alloc(4), 100)).toBe(0);
      fs.closeSync(fd);
      io.close();
    });
  }

  it("io_uring: close is refused while requests are in flight, and a closed engine fails requests with EBADF", async () => {
    if (!uringOrExplain()) return;
    const io = new UringIo(uringAddon().addon as NonNullable<ReturnType<typeof uringAddon>["addon"]>, 4);
    const file = path.join(dir, `close-${crypto.randomUUID()}`);
    fs.writeFileSync(file, Buffer.alloc(4096));
    const fd = fs.openSync(file, "r");
    const pending = rw(io, "read", fd, Buffer.alloc(4096), 0);
    expect(() => io.close()).toThrow(DeviceIoError);
    expect(await pending).toBe(4096);
    io.close();
    await expect(rw(io, "read", fd, Buffer.alloc(16), 0)).rejects.toMatchObject({ code: "EBADF" });
    fs.closeSync(fd);
  });

  it("io_uring: past the waiting limit a read fails with EAGAIN, but a flush is never refused for a full queue (a failed flush fails the pool)", async () => {
    if (!uringOrExplain()) return;
    // One request in the ring, at most two waiting: the fourth read is past the limit.
    const io = new UringIo(realAddon(), 1, 2);
    const { fd, data } = randomFile(4 * 4096);
    try {
      const buffers = [0, 1, 2, 3].map(() => Buffer.alloc(4096));
      const reads = buffers.map((b, i) => rw(io, "read", fd, b, i * 4096).catch((e: unknown) => e));
      const flushes = [sync(io, fd), sync(io, fd)].map((p) => p.then(() => "flushed").catch((e: unknown) => e));
      // Everything settles before any assertion, so nothing is left in flight on a failure.
      const results = await Promise.all(reads);
      expect(await Promise.all(flushes)).toEqual(["flushed", "flushed"]);
      expect(results.slice(0, 3)).toEqual([4096, 4096, 4096]);
      expect(results[3]).toBeInstanceOf(DeviceIoError);
      expect(results[3]).toMatchObject({ code: "EAGAIN", errno: -os.constants.errno.EAGAIN, syscall: "pread" });
      for (let i = 0; i < 3; i++) expect(buffers[i]?.equals(data.subarray(i * 4096, (i + 1) * 4096))).toBe(true);
      expect(io.inFlight).toBe(0);
    } finally {
      fs.closeSync(fd);
      io.close();
    }
  });

  it("errno names: the first name node lists for a number wins (11 is EAGAIN, not EWOULDBLOCK)", () => {
    const { EAGAIN, ENOTSUP, EIO } = os.constants.errno;
    expect(new DeviceIoError(EAGAIN, "pread")).toMatchObject({ code: "EAGAIN", errno: -EAGAIN });
    expect(new DeviceIoError(-EAGAIN, "pread").message).toMatch(/^EAGAIN: pread failed/);
    expect(new DeviceIoError(ENOTSUP, "pwrite").code).toBe("ENOTSUP");
    expect(new DeviceIoError(-EIO, "fdatasync").code).toBe("EIO");
    expect(new DeviceIoError(100_000, "pread").code).toBe("E100000");
  });

  it("auto: when the full-size ring cannot be opened after the probe ring worked, the thread pool serves and the note says why; io_uring asked for is UNAVAILABLE", async () => {
    // The probe (a ring of 2) passed; the ring of URING_CAPACITY is refused, as RLIMIT_MEMLOCK does on kernels before 5.12.
    const refusing = {
      open: () => {
        throw new Error("Cannot allocate memory");
      },
    } as unknown as UringAddon;
    const load = () => ({ addon: refusing, why: null });
    const { io, report } = chooseIoEngine("auto", load);
    expect(report.engine).toBe("threadpool");
    expect(report.note).toMatch(/io_uring.*Cannot allocate memory/);
    await roundTrip(io);
    io.close();
    let error: unknown;
    try {
      chooseIoEngine("io_uring", load);
    } catch (e) {
      error = e;
    }
    expect(error).toBeInstanceOf(KeelsonError);
    expect(error).toMatchObject({ code: "UNAVAILABLE", message: expect.stringMatching(/Cannot allocate memory/) });
  });

  it("io_uring probe: a kernel without the READ, WRITE or FSYNC op is refused with the missing ops named, and auto falls back to the thread pool", async () => {
    if (!uringOrExplain()) return;
    const real = realAddon();
    // This kernel has all three (the addon loaded).
    expect(real.missingOps).toBeTypeOf("function");
    expect(probeUring(real)).toEqual({ addon: real, why: null });
    // The addon's own properties are read-only: a kernel without FSYNC is played by a copy that answers so.
    const { open, read, write, fdatasync, submit, reapNow, close, tuneAllocator } = real;
    const noFsync: UringAddon = {
      open,
      read,
      write,
      fdatasync,
      submit,
      reapNow,
      close,
      tuneAllocator,
      missingOps: () => ["FSYNC"],
    };
    const probed = probeUring(noFsync);
    expect(probed.addon).toBeNull();
    expect(probed.why).toMatch(/FSYNC/);
    const { io, report } = chooseIoEngine("auto", () => probeUring(noFsync));
    expect(report).toEqual({ engine: "threadpool", note: probed.why });
    await roundTrip(io);
    io.close();
  });

  it("useIoEngine: choosing the process's engine again with the same choice keeps it (no new ring)", async () => {
    useIoEngine("auto");
    const first = deviceIo();
    const report = useIoEngine("auto");
    expect(deviceIo()).toBe(first);
    expect(report.engine).toBe(first.engine);
    await roundTrip(deviceIo());
  });

  it("useIoEngine: an idle engine that is replaced is closed (its ring is not left open)", async () => {
    if (!uringOrExplain()) return;
    useIoEngine("io_uring");
    const old = deviceIo();
    await roundTrip(old);
    expect(useIoEngine("threadpool").engine).toBe("threadpool");
    expect(deviceIo()).not.toBe(old);
    await expect(roundTrip(old)).rejects.toMatchObject({ code: "EBADF" });
    await roundTrip(deviceIo());
  });

  it("KEELSON_IO picks the engine; anything else is INVALID_ARGUMENT", () => {
    expect(ioEngineFromEnv({})).toBe("auto");
    expect(ioEngineFromEnv({ KEELSON_IO: "threadpool" })).toBe("threadpool");
    expect(() => ioEngineFromEnv({ KEELSON_IO: "aio" })).toThrow(/KEELSON_IO=aio/);
    const { io, report } = chooseIoEngine("threadpool");
    expect(report).toEqual({ engine: "threadpool", note: "asked for (threadpool)" });
    io.close();
  });

  // Child processes: each needs a fresh process (a forced GC; an uncaught exception).
  const child = async (code: string): Promise<string> => {
    const script = path.join(dir, `child-${crypto.randomUUID()}.mjs`);
    fs.writeFileSync(script, code);
    const { stdout } = await exec(process.execPath, ["--expose-gc", script], { timeout: 30_000 });
    return stdout.trim();
  };

  it("io_uring: rings opened and closed one after another, with garbage collection between, keep completing (the eventfd of a closed ring is out of epoll before its number is reused)", async () => {
    if (!uringOrExplain()) return;
    const out = await child(`
      import { createRequire } from "node:module";
      import fs from "node:fs";
      const addon = createRequire(import.meta.url)(${JSON.stringify(ADDON_PATH)});
      const fd = fs.openSync(${JSON.stringify(__filename)}, "r");
      let done = 0;
      for (let round = 0; round < 6; round++) {
        const results = new Int32Array(8);
        const buf = Buffer.alloc(64);
        const ok = await new Promise((resolve) => {
          const timer = setTimeout(() => resolve(false), 3000);
          const ring = addon.open(4, (n) => { clearTimeout(timer); setImmediate(() => resolve(ring)); }, results);
          addon.read(ring, fd, buf, 0, 64, 0, 1);
          addon.submit(ring);
        });
        if (!ok) { console.log("no completion in 3 s in round " + round); process.exit(0); }
        addon.close(ok);
        globalThis.gc();
        await new Promise((r) => setTimeout(r, 20));
        done++;
      }
      console.log("rounds " + done);
    `);
    expect(out).toBe("rounds 6");
  });

  it("io_uring: a completion callback that throws does not lose the rest of its batch; the error reaches uncaughtException", async () => {
    if (!uringOrExplain()) return;
    const out = await child(`
      import fs from "node:fs";
      const { UringIo } = await import(${JSON.stringify(path.join(__dirname, "uring-io.ts").replace(/\.ts$/, ".js").replace("/src/", "/dist/"))}).catch(() => ({}));
      if (!UringIo) { console.log("dist not built"); process.exit(0); }
      const { uringAddon } = await import(${JSON.stringify(path.join(__dirname, "uring-addon.ts").replace(/\.ts$/, ".js").replace("/src/", "/dist/"))});
      const io = new UringIo(uringAddon().addon, 16);
      const fd = fs.openSync(${JSON.stringify(__filename)}, "r");
      let completed = 0;
      const caught = [];
      process.on("uncaughtException", (e) => caught.push(e.message));
      for (let i = 0; i < 8; i++) io.read(fd, Buffer.alloc(16), 0, 16, 0, () => { completed++; if (i === 2) throw new Error("boom"); });
      setTimeout(() => console.log("completed " + completed + " caught " + caught.join(",")), 500);
    `);
    if (out === "dist not built") {
      if (process.env.CI) throw new Error("the engine's dist is not built: this test loads it in a child process");
      console.error("!!!!!!!! dist not built: the throwing-callback test did not run !!!!!!!!");
      return;
    }
    expect(out).toBe("completed 8 caught boom");
  });
});
