import fs from "node:fs";
import os from "node:os";
import path from "node:path";
import { afterEach, beforeEach, expect, it } from "vitest";
import { planLayout } from "./layout.js";
import { reserveMetadataArea } from "./metadata-reserve.js";
import { Pool } from "./pool.js";
import { acceptEveryReservation } from "./reservations.js";

const MIB = 1024 * 1024;
let dir: string;

beforeEach(() => {
  dir = fs.mkdtempSync(path.join(os.tmpdir(), "keelson-reserve-"));
});
afterEach(() => {
  fs.rmSync(dir, { recursive: true, force: true });
});

/** Bytes the host filesystem has allocated to a file. */
function allocatedBytes(file: string): number {
  return fs.statSync(file).blocks * 512;
}

it("metadata area of a sparse pool file: every page allocated on the host, bytes already there unchanged", () => {
  const file = path.join(dir, "pool.img");
  const layout = planLayout(256 * MIB);
  fs.writeFileSync(file, "");
  fs.truncateSync(file, layout.sizeBytes);
  const fd = fs.openSync(file, "r+");
  try {
    // Metadata already on the pool (a checkpoint in slot A, a journal batch) must survive the pass.
    const checkpoint = Buffer.alloc(10_000, 0x5c);
    const batch = Buffer.alloc(300, 0xb7);
    fs.writeSync(fd, checkpoint, 0, checkpoint.length, layout.slotOffsets[0] + 100);
    fs.writeSync(fd, batch, 0, batch.length, layout.journalOffset + 4096 * 7 + 9);
    expect(allocatedBytes(file)).toBeLessThan(MIB);

    const first = reserveMetadataArea(fd, file, layout);
    expect(allocatedBytes(file)).toBeGreaterThanOrEqual(layout.dataOffset);
    // Pages holding metadata are left alone; everything else (holes) was filled.
    expect(first.filledBytes).toBeGreaterThan(layout.dataOffset - 8 * 4096);
    expect(first.filledBytes).toBeLessThan(layout.dataOffset);
    const back = Buffer.alloc(checkpoint.length);
    fs.readSync(fd, back, 0, back.length, layout.slotOffsets[0] + 100);
    expect(back.equals(checkpoint)).toBe(true);
    fs.readSync(fd, back, 0, batch.length, layout.journalOffset + 4096 * 7 + 9);
    expect(back.subarray(0, batch.length).equals(batch)).toBe(true);
    // The data extents stay sparse: only metadata is reserved.
    expect(allocatedBytes(file)).toBeLessThan(layout.dataOffset + MIB);
  } finally {
    fs.closeSync(fd);
  }
});

it("a pool file created by Pool.open has its metadata area allocated and still opens with its data", async () => {
  const file = path.join(dir, "pool.img");
  const pool = await Pool.open({ path: file, createSizeBytes: 128 * MIB, admit: acceptEveryReservation });
  const dataOffset = pool.layout.dataOffset;
  await pool.createVolume({ name: "v", sizeBytes: 8 * MIB });
  await pool.close();
  expect(allocatedBytes(file)).toBeGreaterThanOrEqual(dataOffset);
  expect(allocatedBytes(file)).toBeLessThan(dataOffset + MIB);
  const again = await Pool.open({ path: file, admit: acceptEveryReservation });
  expect(again.listVolumes().map((v) => v.name)).toEqual(["v"]);
  await again.close();
});
