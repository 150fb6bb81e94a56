import fs from "node:fs";
import os from "node:os";
import path from "node:path";
import type { KeelsonError } from "@keelson/sdk";
import { afterEach, beforeEach, describe, expect, it } from "vitest";
import { BlockState, getState } from "./block-states.js";
import { Pool } from "./pool.js";
import { acceptEveryReservation } from "./reservations.js";
import { writeVolume } from "./volume-io.js";

const MIB = 1024 * 1024;
let dir: string;

beforeEach(() => {
  dir = fs.mkdtempSync(path.join(os.tmpdir(), "keelson-crash-space-"));
});
afterEach(() => {
  fs.rmSync(dir, { recursive: true, force: true });
});

function open(file: string): Promise<Pool> {
  return Pool.open({ admit: acceptEveryReservation, path: file, createSizeBytes: 64 * MIB });
}

describe("space a crash left allocated without data", () => {
  it("is given back at open: a commit that ran while a write was in flight recorded its space, a kill -9 came before its data was", async () => {
    const file = path.join(dir, "pool.img");
    let pool = await open(file);
    try {
      await pool.createVolume({ name: "v", sizeBytes: 16 * MIB });
      // Space for a whole-extent write is taken (and marked for the next commit) before its data lands.
      const writing = new Promise<KeelsonError | null>((resolve) =>
        writeVolume(pool, pool.getVolume("v"), 0, Buffer.alloc(MIB, 1), false, resolve),
      );
      await pool.flush();
      expect(await writing).toBeNull();
      pool.abandon();
      pool = await open(file);
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
