import fs from "node:fs";
import os from "node:os";
import path from "node:path";
import { isKeelsonError, type KeelsonError } from "@keelson/sdk";
import { afterEach, beforeEach, describe, expect, it } from "vitest";
import { BlockState, getState } from "./block-states.js";
import { BLOCK_SIZE_BYTES } from "./layout.js";
import { Pool } from "./pool.js";
import { acceptEveryReservation } from "./reservations.js";
import { writeVolume } from "./volume-io.js";

// The pool's space as its users see it, past what one layer holds: how far
// extent entries let scattered writes go, and what a crash leaves held.

const MIB = 1024 * 1024;
let dir: string;

beforeEach(() => {
  dir = fs.mkdtempSync(path.join(os.tmpdir(), "keelson-pool-space-"));
});
afterEach(() => {
  fs.rmSync(dir, { recursive: true, force: true });
});

function write(pool: Pool, volume: string, offset: number, data: Buffer): Promise<KeelsonError | null> {
  return new Promise((resolve) => writeVolume(pool, pool.getVolume(volume), offset, data, false, resolve));
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
          failure = await write(pool, "v", extent * MIB + ((round * 4096) % MIB), Buffer.alloc(BLOCK_SIZE_BYTES, 7));
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

describe("space a crash left allocated without data", () => {
  it("is given back at open: a commit that ran while a write was in flight recorded its space, a kill -9 came before its data was", async () => {
    const file = path.join(dir, "pool.img");
    const open = (): Promise<Pool> => Pool.open({ admit: acceptEveryReservation, path: file, createSizeBytes: 64 * MIB });
    let pool = await open();
    try {
      await pool.createVolume({ name: "v", sizeBytes: 16 * MIB });
      // Space for a whole-extent write is taken (and marked for the next commit) before its data lands.
      const writing = write(pool, "v", 0, Buffer.alloc(MIB, 1));
      await pool.flush();
      expect(await writing).toBeNull();
      pool.abandon();
      pool = await open();
      const head = pool.getVolume("v").head;
      const space = pool.space();
      // The write was never acknowledged as durable: the volume reads it or zeros, and holds no space it does not read.
      const entry = head.extents.get(0);
      const dataBlocks = entry ? [...Array(256).keys()].filter((b) => getState(entry.states, b) === BlockState.DATA).length : 0;
      console.log(
        `after the crash: head holds ${pool.layerBytes(head)} bytes for ${dataBlocks} data blocks; pool allocated ${space.allocatedBytes}`,
      );
      expect(pool.layerBytes(head)).toBe(dataBlocks * 4096);
    } finally {
      await pool.close();
    }
  });
});
