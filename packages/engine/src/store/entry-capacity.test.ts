import fs from "node:fs";
import os from "node:os";
import path from "node:path";
import { isKeelsonError, type KeelsonError } from "@keelson/sdk";
import { afterEach, beforeEach, describe, expect, it } from "vitest";
import { BLOCK_SIZE_BYTES } from "./layout.js";
import { Pool } from "./pool.js";
import { acceptEveryReservation } from "./reservations.js";
import { writeVolume } from "./volume-io.js";

const MIB = 1024 * 1024;
let dir: string;

beforeEach(() => {
  dir = fs.mkdtempSync(path.join(os.tmpdir(), "keelson-entries-"));
});
afterEach(() => {
  fs.rmSync(dir, { recursive: true, force: true });
});

function write(pool: Pool, volume: string, offset: number): Promise<KeelsonError | null> {
  return new Promise((resolve) =>
    writeVolume(pool, pool.getVolume(volume), offset, Buffer.alloc(BLOCK_SIZE_BYTES, 7), false, resolve),
  );
}

describe("extent entries of a pool with sub-extent allocation", () => {
  it("scattered 4 KiB writes with a snapshot after every 64 fill a tenth of the pool's data space or more before its metadata is full, which says so", async () => {
    // The worst case for entries: every write lands alone in an extent of a new layer, so each 4 KiB
    // of data takes an entry of its own. Entries were sized for whole extents (2 per extent): such a
    // pool reported itself full with 2.5% of its space used.
    const pool = await Pool.open({ admit: acceptEveryReservation, path: path.join(dir, "pool.img"), createSizeBytes: 256 * MIB });
    try {
      const extents = 192;
      await pool.createVolume({ name: "v", sizeBytes: extents * MIB });
      let failure: KeelsonError | null = null;
      let snapshots = 0;
      for (let round = 0; failure === null && round < 1000; round++) {
        for (let e = 0; e < 64 && failure === null; e++) {
          const extent = (round * 64 + e) % extents;
          failure = await write(pool, "v", extent * MIB + ((round * 4096) % MIB));
        }
        if (failure === null) {
          await pool.createSnapshot({ volumeName: "v", name: `s${round}` });
          snapshots++;
        }
      }
      const space = pool.space();
      const used = space.allocatedBytes / space.totalBytes;
      console.log(
        `scattered 4 KiB writes, a snapshot every 64: full after ${snapshots} snapshots, ${pool.entryCount} entries of ${pool.layout.maxEntries}, ${(used * 100).toFixed(1)}% of the space used; ${failure?.message}`,
      );
      expect(isKeelsonError(failure, "NO_SPACE")).toBe(true);
      expect(failure?.message).toMatch(/metadata is full/);
      expect(used).toBeGreaterThanOrEqual(0.1);
    } finally {
      await pool.close();
    }
  }, 120_000);
});
