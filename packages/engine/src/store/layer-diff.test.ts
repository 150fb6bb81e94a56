import fs from "node:fs";
import os from "node:os";
import path from "node:path";
import type { KeelsonError } from "@keelson/sdk";
import { afterEach, beforeEach, describe, expect, it } from "vitest";
import { Pool } from "./pool.js";
import { acceptEveryReservation } from "./reservations.js";
import { readVolume, writeVolume, zeroVolume } from "./volume-io.js";

const EXTENT = 16 * 1024;
let dir: string;
let pool: Pool;

beforeEach(async () => {
  dir = fs.mkdtempSync(path.join(os.tmpdir(), "keelson-layerdiff-"));
  pool = await Pool.open({
    admit: acceptEveryReservation,
    path: path.join(dir, "pool"),
    createSizeBytes: 32 * 1024 * 1024,
    extentSizeBytes: EXTENT,
  });
});
afterEach(async () => {
  await pool.close();
  fs.rmSync(dir, { recursive: true, force: true });
});

function io(run: (cb: (e: KeelsonError | null) => void) => void): Promise<void> {
  return new Promise((resolve, reject) => run((e) => (e ? reject(e) : resolve())));
}
const write = (extent: number, byte: number) =>
  io((cb) => writeVolume(pool, pool.getVolume("v"), extent * EXTENT, Buffer.alloc(EXTENT, byte), false, cb));
const trim = (extent: number) =>
  io((cb) => zeroVolume(pool, pool.getVolume("v"), extent * EXTENT, EXTENT, { trim: true, noHole: false, fua: false }, cb));

describe("chain changes (the layers' allocation maps)", () => {
  it("name exactly the extents written, zeroed or trimmed above the base, and copying them onto the base gives the view", async () => {
    await pool.createVolume({ name: "v", sizeBytes: 16 * EXTENT });
    await write(0, 1);
    await write(2, 2);
    await pool.createSnapshot({ volumeName: "v", name: "a" });
    await write(2, 3);
    await write(5, 4);
    await write(0, 5);
    await trim(0);
    await pool.createSnapshot({ volumeName: "v", name: "b" });
    await write(9, 6);
    expect(pool.changes("v", "a", "").extents).toEqual([0, 2]);
    expect(pool.changes("v", "b", "a").extents).toEqual([0, 2, 5]);
    expect(pool.changes("v", "", "b").extents).toEqual([9]);
    expect(pool.changes("v", "", "a").extents).toEqual([0, 2, 5, 9]);
    expect(pool.changes("v", "", "")).toEqual({ extentBytes: EXTENT, sizeBytes: 16 * EXTENT, extents: [0, 2, 5, 9] });
    // Unchanged extents hold the same bytes in b as in a: what is not named needs no copy.
    const read = (snapshot: string, extent: number) => {
      const buf = Buffer.alloc(EXTENT);
      const view = pool.findSnapshot(`v@${snapshot}`);
      if (!view) throw new Error(`no snapshot ${snapshot}`);
      return io((cb) => readVolume(pool, view, extent * EXTENT, EXTENT, buf, 0, cb)).then(() => buf);
    };
    for (let e = 0; e < 16; e++) {
      if ([0, 2, 5].includes(e)) continue;
      expect((await read("b", e)).equals(await read("a", e)), `extent ${e}`).toBe(true);
    }
  });

  it("refuse a base that is not below the view in its chain (INVALID_ARGUMENT) and a missing one (SNAPSHOT_NOT_FOUND)", async () => {
    await pool.createVolume({ name: "v", sizeBytes: 16 * EXTENT });
    await write(1, 1);
    await pool.createSnapshot({ volumeName: "v", name: "a" });
    await write(3, 1);
    await pool.createSnapshot({ volumeName: "v", name: "b" });
    const code = (f: () => unknown) => {
      try {
        f();
        return "ok";
      } catch (error) {
        return (error as KeelsonError).code;
      }
    };
    expect(code(() => pool.changes("v", "a", "b"))).toBe("INVALID_ARGUMENT");
    expect(code(() => pool.changes("v", "", "nope"))).toBe("SNAPSHOT_NOT_FOUND");
  });
});
