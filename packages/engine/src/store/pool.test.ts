import fs from "node:fs";
import os from "node:os";
import path from "node:path";
import { crc32 } from "node:zlib";
import { isKeelsonError, KeelsonError } from "@keelson/sdk";
import { afterEach, beforeEach, describe, expect, it } from "vitest";
import { seededRandom, testSeed } from "../testing/random.js";
import { DEFAULT_EXTENT_SIZE_BYTES as EXTENT_SIZE_BYTES } from "./layout.js";
import { Pool, poolCore } from "./pool.js";
import { acceptEveryReservation, type ReservationRequest } from "./reservations.js";
import { MAX_CHAIN_LAYERS } from "./validation.js";
import type { Volume } from "./volume.js";
import { readVolume, writeVolume, type ZeroOptions, zeroVolume } from "./volume-io.js";

const MIB = 1024 * 1024;
let dir: string;

beforeEach(() => {
  dir = fs.mkdtempSync(path.join(os.tmpdir(), "keelson-pool-"));
});
afterEach(() => {
  fs.rmSync(dir, { recursive: true, force: true });
});

function read(pool: Pool, v: Volume, offset: number, length: number): Promise<Buffer> {
  const buf = Buffer.alloc(length, 0xee);
  return new Promise((resolve, reject) => readVolume(pool, v, offset, length, buf, 0, (e) => (e ? reject(e) : resolve(buf))));
}
function write(pool: Pool, v: Volume, offset: number, data: Buffer, fua = false): Promise<void> {
  return new Promise((resolve, reject) => writeVolume(pool, v, offset, data, fua, (e) => (e ? reject(e) : resolve())));
}
function zero(pool: Pool, v: Volume, offset: number, length: number, o: Partial<ZeroOptions> = {}): Promise<void> {
  const options = { trim: false, noHole: false, fua: false, ...o };
  return new Promise((resolve, reject) => zeroVolume(pool, v, offset, length, options, (e) => (e ? reject(e) : resolve())));
}

describe("pool", () => {
  it("creates, lists and deletes volumes durably across reopen; delete returns space", async () => {
    const file = path.join(dir, "pool.img");
    let pool = await Pool.open({ admit: acceptEveryReservation, path: file, createSizeBytes: 256 * MIB });
    const free0 = pool.space().freeBytes;
    const a = await pool.createVolume({ name: "a", sizeBytes: 64 * MIB, labels: { app: "pg" } });
    await pool.createVolume({ name: "b", sizeBytes: 8 * MIB });
    await write(pool, a, 3 * MIB, Buffer.alloc(2 * MIB, 7));
    await pool.flush();
    expect(pool.space().freeBytes).toBe(free0 - 2 * EXTENT_SIZE_BYTES);
    await pool.close();

    pool = await Pool.open({ admit: acceptEveryReservation, path: file });
    expect(pool.listVolumes().map((v) => [v.name, v.sizeBytes])).toEqual([
      ["a", 64 * MIB],
      ["b", 8 * MIB],
    ]);
    const a2 = pool.getVolume("a");
    expect(a2.record.labels).toEqual({ app: "pg" });
    expect((await read(pool, a2, 3 * MIB, 2 * MIB)).equals(Buffer.alloc(2 * MIB, 7))).toBe(true);
    expect(await pool.deleteVolume("a")).toBe(2 * MIB);
    await pool.flush(); // the quarantine is reclaimed after the delete's own commit
    expect(pool.space().freeBytes).toBe(free0);
    await pool.close();
    pool = await Pool.open({ admit: acceptEveryReservation, path: file });
    expect(pool.listVolumes().map((v) => v.name)).toEqual(["b"]);
    expect(pool.space().freeBytes).toBe(free0);
    await pool.close();
  });

  it("create is idempotent; a different size is ALREADY_EXISTS; bad names and sizes are INVALID_ARGUMENT", async () => {
    const pool = await Pool.open({ admit: acceptEveryReservation, path: path.join(dir, "p.img"), createSizeBytes: 128 * MIB });
    try {
      const v1 = await pool.createVolume({ name: "x", sizeBytes: MIB });
      expect(await pool.createVolume({ name: "x", sizeBytes: MIB })).toBe(v1);
      await expect(pool.createVolume({ name: "x", sizeBytes: 2 * MIB })).rejects.toMatchObject({ code: "ALREADY_EXISTS" });
      await expect(pool.createVolume({ name: "Bad/Name", sizeBytes: MIB })).rejects.toMatchObject({ code: "INVALID_ARGUMENT" });
      await expect(pool.createVolume({ name: "y", sizeBytes: 1000 })).rejects.toMatchObject({ code: "INVALID_ARGUMENT" });
      await expect(pool.resizeVolume("x", 4096)).rejects.toMatchObject({ code: "SHRINK_NOT_SUPPORTED" });
      expect(() => pool.getVolume("nope")).toThrow(expect.objectContaining({ code: "VOLUME_NOT_FOUND" }));
    } finally {
      await pool.close();
    }
  });

  it("allocates scattered 4 KiB writes 4 KiB at a time, and a trim gives those blocks back (sub-extent allocation)", async () => {
    const file = path.join(dir, "sub.img");
    let pool = await Pool.open({ admit: acceptEveryReservation, path: file, createSizeBytes: 64 * MIB });
    expect(pool.layout.subExtent).toBe(true);
    const v = await pool.createVolume({ name: "v", sizeBytes: 32 * MIB });
    const used0 = pool.space().allocatedBytes;
    for (let i = 0; i < 32; i++) await write(pool, v, i * MIB + 8192, Buffer.alloc(4096, i + 1));
    expect(pool.space().allocatedBytes - used0).toBe(32 * 4096);
    expect(pool.layerBytes(v.head)).toBe(32 * 4096);
    await zero(pool, v, 0, 16 * MIB, { trim: true });
    await pool.flush();
    expect(pool.space().allocatedBytes - used0).toBe(16 * 4096);
    // The block maps survive a restart without a checkpoint (journal replay).
    pool.abandon();
    pool = await Pool.open({ admit: acceptEveryReservation, path: file });
    const back = pool.getVolume("v");
    for (let i = 16; i < 32; i++)
      expect((await read(pool, back, i * MIB + 8192, 4096)).equals(Buffer.alloc(4096, i + 1))).toBe(true);
    expect(pool.space().allocatedBytes - used0).toBe(16 * 4096);
    await pool.close();
  });

  it("a trim next to a write in flight in the same extent still frees the trimmed blocks once the write ends", async () => {
    const pool = await Pool.open({ admit: acceptEveryReservation, path: path.join(dir, "race.img"), createSizeBytes: 64 * MIB });
    try {
      const v = await pool.createVolume({ name: "v", sizeBytes: 8 * MIB });
      // A whole extent (carved by the trim) and a block-mapped one.
      await write(pool, v, 0, Buffer.alloc(MIB, 1));
      await write(pool, v, MIB, Buffer.alloc(8 * 4096, 2));
      await Promise.all([
        write(pool, v, 100 * 4096, Buffer.alloc(4096, 3)),
        zero(pool, v, 0, 64 * 4096, { trim: true }),
        write(pool, v, MIB + 100 * 4096, Buffer.alloc(4096, 4)),
        zero(pool, v, MIB, 4 * 4096, { trim: true }),
      ]);
      await pool.flush();
      expect(pool.layerBytes(v.head)).toBe((256 - 64 + 4 + 1) * 4096);
      expect((await read(pool, v, 100 * 4096, 4096))[0]).toBe(3);
      expect((await read(pool, v, MIB + 4 * 4096, 4096))[0]).toBe(2);
    } finally {
      await pool.close();
    }
  });

  it("a pool formatted before sub-extent allocation (format version 1) opens and keeps allocating whole extents", async () => {
    const file = path.join(dir, "v1.img");
    let pool = await Pool.open({ admit: acceptEveryReservation, path: file, createSizeBytes: 64 * MIB });
    await pool.createVolume({ name: "v", sizeBytes: 8 * MIB });
    await pool.close();
    // Rewrite the superblock as version 1 wrote it: no subExtent field.
    const fd = fs.openSync(file, "r+");
    const sb = Buffer.alloc(4096);
    fs.readSync(fd, sb, 0, 4096, 0);
    const { version: _v, subExtent: _s, ...rest } = JSON.parse(sb.toString("utf8", 12, 12 + sb.readUInt32BE(8)));
    const json = Buffer.from(JSON.stringify({ version: 1, ...rest }), "utf8");
    sb.fill(0, 8);
    sb.writeUInt32BE(json.length, 8);
    json.copy(sb, 12);
    sb.writeUInt32BE(crc32(sb.subarray(0, 4092)), 4092);
    fs.writeSync(fd, sb, 0, 4096, 0);
    fs.closeSync(fd);
    pool = await Pool.open({ admit: acceptEveryReservation, path: file });
    try {
      expect(pool.layout.subExtent).toBe(false);
      const v = pool.getVolume("v");
      const used0 = pool.space().allocatedBytes;
      await write(pool, v, 8192, Buffer.alloc(4096, 7));
      expect(pool.space().allocatedBytes - used0).toBe(EXTENT_SIZE_BYTES);
      expect((await read(pool, v, 8192, 4096))[0]).toBe(7);
    } finally {
      await pool.close();
    }
  });

  it("a full pool fails writes with NO_SPACE and keeps acknowledged data", async () => {
    const pool = await Pool.open({ admit: acceptEveryReservation, path: path.join(dir, "small.img"), createSizeBytes: 32 * MIB });
    try {
      const extents = pool.layout.extentCount;
      const v = await pool.createVolume({ name: "big", sizeBytes: (extents + 4) * MIB });
      // Whole extents: a smaller write takes only its blocks (sub-extent allocation).
      for (let i = 0; i < extents; i++) await write(pool, v, i * MIB, Buffer.alloc(MIB, i + 1));
      const err = await write(pool, v, extents * MIB, Buffer.alloc(4096, 1)).catch((e: unknown) => e);
      expect(isKeelsonError(err, "NO_SPACE")).toBe(true);
      for (let i = 0; i < extents; i++) expect((await read(pool, v, i * MIB, 4096))[0]).toBe(i + 1);
      // Trimming a whole extent gives its space back after the next commit.
      await zero(pool, v, 0, MIB, { trim: true });
      await pool.flush();
      await write(pool, v, extents * MIB, Buffer.alloc(4096, 9));
      expect((await read(pool, v, extents * MIB, 4096))[0]).toBe(9);
    } finally {
      await pool.close();
    }
  });

  it("a full pool with freed extents awaiting their commit takes the write at once (no FLUSH needed)", async () => {
    const pool = await Pool.open({ admit: acceptEveryReservation, path: path.join(dir, "full.img"), createSizeBytes: 32 * MIB });
    try {
      const extents = pool.layout.extentCount;
      const v = await pool.createVolume({ name: "v", sizeBytes: extents * MIB });
      for (let i = 0; i < extents; i++) await write(pool, v, i * MIB, Buffer.alloc(MIB, i + 1));
      // Every extent trimmed, no FLUSH: the space is free but not yet reusable.
      await zero(pool, v, 0, extents * MIB, { trim: true });
      // Many writes at once into freed extents: each allocation that finds the pool full commits and retries.
      await Promise.all(Array.from({ length: extents }, (_, i) => write(pool, v, i * MIB + 8192, Buffer.alloc(4096, 100 + i))));
      for (let i = 0; i < extents; i++) {
        const back = await read(pool, v, i * MIB, 3 * 4096);
        expect([back[0], back[8192]]).toEqual([0, 100 + i]);
      }
      // Those writes took a block each, not an extent each. Still a real NO_SPACE for a write larger than what is
      // free once nothing is quarantined, and it allocates nothing.
      await pool.flush();
      const free = pool.space().freeBytes;
      expect(free).toBe(pool.space().totalBytes - extents * 4096);
      const big = await pool.createVolume({ name: "more", sizeBytes: extents * MIB });
      const err = await write(pool, big, 0, Buffer.alloc(free + 4096, 1)).catch((e: unknown) => e);
      expect(isKeelsonError(err, "NO_SPACE")).toBe(true);
      expect(pool.space().freeBytes).toBe(free);
    } finally {
      await pool.close();
    }
  });

  it("free extents running low while freed ones wait in quarantine start a commit in the background (no FLUSH, no failed allocation)", async () => {
    const pool = await Pool.open({ admit: acceptEveryReservation, path: path.join(dir, "low.img"), createSizeBytes: 64 * MIB });
    try {
      const extents = pool.layout.extentCount;
      const v = await pool.createVolume({ name: "v", sizeBytes: extents * MIB });
      for (let i = 0; i < extents - 1; i++) await write(pool, v, i * MIB, Buffer.alloc(MIB, 1));
      await zero(pool, v, 0, 8 * MIB, { trim: true });
      const before = pool.space().freeBytes;
      // Takes the last free extent: below the low-water mark with 8 in quarantine.
      await write(pool, v, (extents - 1) * MIB, Buffer.alloc(MIB, 2));
      // A bound, not a timing: under CI's load (parallel test files syncing GiBs) one commit took over a second.
      const deadline = Date.now() + 30_000;
      while (Date.now() < deadline && pool.space().freeBytes < before + 7 * MIB) await new Promise((r) => setTimeout(r, 10));
      expect(pool.space().freeBytes).toBe(before + 7 * EXTENT_SIZE_BYTES);
    } finally {
      await pool.close();
    }
  });

  it("a FLUSH after overwrites of written blocks syncs the data once and writes no journal record (nothing in the metadata changed)", async () => {
    const pool = await Pool.open({ admit: acceptEveryReservation, path: path.join(dir, "pool.img"), createSizeBytes: 64 * MIB });
    try {
      const v = await pool.createVolume({ name: "v", sizeBytes: 8 * MIB });
      await write(pool, v, 0, Buffer.alloc(64 * 1024, 1));
      await pool.flush();
      // The device I/O is the process's own: count its calls for this pool's fd only, and put it back.
      const { io, fd } = poolCore(pool).device;
      const { fdatasync, write: pwrite } = io;
      let syncs = 0;
      let metadataWrites = 0;
      io.fdatasync = (f, cb) => {
        if (f === fd) syncs++;
        fdatasync.call(io, f, cb);
      };
      io.write = (f, buf, off, len, pos, cb) => {
        if (f === fd && pos < pool.layout.dataOffset) metadataWrites++;
        pwrite.call(io, f, buf, off, len, pos, cb);
      };
      try {
        for (let i = 0; i < 16; i++) await write(pool, v, i * 4096, Buffer.alloc(4096, i));
        await pool.flush();
      } finally {
        io.fdatasync = fdatasync;
        io.write = pwrite;
      }
      expect({ syncs, metadataWrites }).toEqual({ syncs: 1, metadataWrites: 0 });
      expect((await read(pool, v, 15 * 4096, 4096)).equals(Buffer.alloc(4096, 15))).toBe(true);
    } finally {
      await pool.close();
    }
  });

  it("randomized writes, zeroes, trims and reopens match a reference model", async () => {
    const seed = testSeed();
    console.log(`pool model test seed=${seed} (rerun with KEELSON_SEED=${seed})`);
    const rand = seededRandom(seed);
    const file = path.join(dir, "model.img");
    const size = 6 * MIB;
    let pool = await Pool.open({ admit: acceptEveryReservation, path: file, createSizeBytes: 64 * MIB });
    let v = await pool.createVolume({ name: "m", sizeBytes: size });
    const model = Buffer.alloc(size);
    const pick = (max: number) => Math.floor(rand() * max);
    for (let step = 0; step < 400; step++) {
      const op = rand();
      const aligned = rand() < 0.7;
      const offset = aligned ? pick(size / 4096) * 4096 : pick(size);
      const maxLen = Math.min(size - offset, 3 * MIB);
      const length = aligned ? Math.min(maxLen, (1 + pick(64)) * 4096) : 1 + pick(Math.max(1, Math.min(maxLen, 20000)));
      if (op < 0.5) {
        const data = Buffer.alloc(length, 1 + pick(250));
        await write(pool, v, offset, data, rand() < 0.1);
        data.copy(model, offset);
      } else if (op < 0.65) {
        await zero(pool, v, offset, length);
        model.fill(0, offset, offset + length);
      } else if (op < 0.75) {
        await zero(pool, v, offset, length, { trim: true });
        // TRIM discards only whole blocks; those read back as zero here (a single-layer volume).
        const s = Math.ceil(offset / 4096) * 4096;
        const e = Math.floor((offset + length) / 4096) * 4096;
        if (s < e) model.fill(0, s, e);
      } else if (op < 0.8) {
        await pool.flush();
        await pool.close();
        pool = await Pool.open({ admit: acceptEveryReservation, path: file });
        v = pool.getVolume("m");
      } else {
        const got = await read(pool, v, offset, length);
        expect(got.equals(model.subarray(offset, offset + length)), `step ${step} seed ${seed}`).toBe(true);
      }
    }
    expect((await read(pool, v, 0, size)).equals(model), `seed ${seed}`).toBe(true);
    await pool.close();
  });

  it("bounds: a chain deeper than MAX_CHAIN_LAYERS is refused with LIMIT_EXCEEDED; deleting a snapshot makes room", async () => {
    const pool = await Pool.open({
      admit: acceptEveryReservation,
      path: path.join(dir, "pool.img"),
      createSizeBytes: 64 * MIB,
      extentSizeBytes: 16 * 1024,
    });
    try {
      await pool.createVolume({ name: "deep", sizeBytes: MIB });
      for (let i = 1; i < MAX_CHAIN_LAYERS; i++) await pool.createSnapshot({ volumeName: "deep", name: `s${i}` });
      expect(pool.getVolume("deep").chain.length).toBe(MAX_CHAIN_LAYERS);
      const refused = await pool.createSnapshot({ volumeName: "deep", name: "one-more" }).catch((e: unknown) => e);
      expect(isKeelsonError(refused, "LIMIT_EXCEEDED")).toBe(true);
      const clone = await pool.createVolume({ name: "c", source: { volumeName: "deep" } }).catch((e: unknown) => e);
      expect(isKeelsonError(clone, "LIMIT_EXCEEDED")).toBe(true);
      await pool.deleteSnapshot("deep", "s7");
      await pool.createSnapshot({ volumeName: "deep", name: "one-more" });
      expect(pool.getVolume("deep").chain.length).toBe(MAX_CHAIN_LAYERS);
    } finally {
      await pool.close();
    }
  });

  it("extent size: any power of two from 16 KiB to 64 MiB is accepted at format time, others fail with INVALID_ARGUMENT", async () => {
    for (const bad of [8192, 3 * 16384, 128 * MIB]) {
      const e = await Pool.open({
        admit: acceptEveryReservation,
        path: path.join(dir, `bad-${bad}.img`),
        createSizeBytes: 64 * MIB,
        extentSizeBytes: bad,
      }).catch((error: unknown) => error);
      expect(isKeelsonError(e, "INVALID_ARGUMENT"), `extent size ${bad}`).toBe(true);
    }
    const file = path.join(dir, "ok.img");
    const pool = await Pool.open({
      admit: acceptEveryReservation,
      path: file,
      createSizeBytes: 64 * MIB,
      extentSizeBytes: 64 * 1024,
    });
    expect(pool.layout.extentSizeBytes).toBe(64 * 1024);
    await pool.close();
    // An existing pool keeps the extent size it was formatted with.
    const again = await Pool.open({ admit: acceptEveryReservation, path: file, extentSizeBytes: MIB });
    expect(again.layout.extentSizeBytes).toBe(64 * 1024);
    await again.close();
  });

  it("reservations are judged by the admit hook given at open; a refused create or policy change stores nothing", async () => {
    const asked: ReservationRequest[] = [];
    const admit = (r: ReservationRequest): void => {
      asked.push(r);
      if (r.reserved.iops + r.wanted.iops > 100) throw new KeelsonError({ code: "QOS_ADMISSION_DENIED", message: "full" });
    };
    const policy = (reservationIops: number) => ({ limits: {}, reservationIops, reservationBytesPerSec: 0, weight: 1 });
    const file = path.join(dir, "admit.img");
    let pool = await Pool.open({ path: file, createSizeBytes: 64 * MIB, admit });
    await pool.createVolume({ name: "a", sizeBytes: MIB, qos: policy(60) });
    const refused = await pool.createVolume({ name: "b", sizeBytes: MIB, qos: policy(50) }).catch((e: unknown) => e);
    expect(isKeelsonError(refused, "QOS_ADMISSION_DENIED")).toBe(true);
    expect(pool.findVolume("b")).toBeUndefined();
    // A policy change is judged without the volume's own reservation.
    await pool.setVolumeQos("a", policy(100), undefined);
    await expect(pool.setVolumeQos("a", policy(101), undefined)).rejects.toMatchObject({ code: "QOS_ADMISSION_DENIED" });
    expect(pool.reserved()).toEqual({ iops: 100, bytesPerSec: 0 });
    expect(asked.map((r) => [r.diskPath, r.reserved.iops, r.wanted.iops])).toEqual([
      [file, 0, 60],
      [file, 60, 50],
      [file, 0, 100],
      [file, 0, 101],
    ]);
    await pool.close();
    // The store itself judges nothing: with a rule that accepts all, the reservation is stored.
    pool = await Pool.open({ admit: acceptEveryReservation, path: file });
    await pool.createVolume({ name: "b", sizeBytes: MIB, qos: policy(50) });
    expect(pool.reserved()).toEqual({ iops: 150, bytesPerSec: 0 });
    await pool.close();
  });
});
