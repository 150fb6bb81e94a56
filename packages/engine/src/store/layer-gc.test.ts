import fs from "node:fs";
import os from "node:os";
import path from "node:path";
import { afterEach, beforeEach, describe, expect, it } from "vitest";
import { BLOCK_SIZE_BYTES } from "./layout.js";
import { Pool } from "./pool.js";
import { acceptEveryReservation } from "./reservations.js";
import { readVolume, writeVolume } from "./volume-io.js";
import type { WriteGate } from "./write-gate.js";

// A snapshot delete is durable before its layer is folded into the head, and
// the fold goes one extent at a time under the volume's gate. A crash can
// therefore leave a fold not started, or half done and committed (a flush
// from any client commits whatever the fold has moved so far). The pool must
// finish it when it opens. The daemon test kills keelsond around a delete,
// but a fold without copies is over in milliseconds there: these stop it at
// a chosen extent by holding the gate, which makes the case certain.

const MIB = 1024 * 1024;
const EXTENTS = 16;
let dir: string;

beforeEach(() => {
  dir = fs.mkdtempSync(path.join(os.tmpdir(), "keelson-layer-gc-"));
});
afterEach(() => {
  fs.rmSync(dir, { recursive: true, force: true });
});

function write(pool: Pool, offset: number, data: Buffer): Promise<void> {
  return new Promise((resolve, reject) =>
    writeVolume(pool, pool.getVolume("v"), offset, data, false, (e) => (e ? reject(e) : resolve())),
  );
}

function readAll(pool: Pool): Promise<Buffer> {
  const buf = Buffer.alloc(EXTENTS * MIB);
  return new Promise((resolve, reject) =>
    readVolume(pool, pool.getVolume("v"), 0, buf.length, buf, 0, (e) => (e ? reject(e) : resolve(buf))),
  );
}

async function until(what: string, done: () => boolean): Promise<void> {
  for (const started = Date.now(); !done(); await new Promise((r) => setTimeout(r, 1))) {
    if (Date.now() - started > 5_000) throw new Error(`timed out waiting for ${what}`);
  }
}

/**
 * Holds `gate` shared behind the exclusive holder waiting for it (the fold's
 * next extent), so that holder runs once the current shared hold is let go
 * and the fold then stops before the extent after it. Resolves to a flag that
 * turns true when this hold starts.
 */
async function holdBehindFold(gate: WriteGate): Promise<{ started: boolean }> {
  for (const began = Date.now(); ; await new Promise((r) => setTimeout(r, 1))) {
    const hold = { started: false };
    gate.runShared(() => {
      hold.started = true;
    });
    if (!hold.started) return hold; // queued: an exclusive holder waits ahead of it
    gate.leaveShared();
    if (Date.now() - began > 5_000) throw new Error("the fold never waited for the volume's gate");
  }
}

describe("a snapshot fold a crash interrupted", () => {
  for (const folded of [0, 1, EXTENTS / 2]) {
    it(`finishes when the pool opens: crash after ${folded} of ${EXTENTS} extents were folded and committed`, async () => {
      const file = path.join(dir, "pool.img");
      const open = (): Promise<Pool> => Pool.open({ admit: acceptEveryReservation, path: file, createSizeBytes: 64 * MIB });
      let pool = await open();
      try {
        await pool.createVolume({ name: "v", sizeBytes: EXTENTS * MIB });
        const expected = Buffer.alloc(EXTENTS * MIB);
        const stamp = async (at: number, tag: number): Promise<void> => {
          const block = Buffer.alloc(BLOCK_SIZE_BYTES, tag);
          block.writeUInt32BE(at / BLOCK_SIZE_BYTES, 0);
          await write(pool, at, block);
          block.copy(expected, at);
        };
        // Two blocks per extent in the snapshot, one of them overwritten in the head: the fold moves one
        // block of each extent into the head's map and gives the overwritten one back.
        for (let e = 0; e < EXTENTS; e++) {
          await stamp(e * MIB, 0x11);
          await stamp(e * MIB + 64 * BLOCK_SIZE_BYTES, 0x11);
        }
        await pool.createSnapshot({ volumeName: "v", name: "old" });
        for (let e = 0; e < EXTENTS; e++) await stamp(e * MIB, 0x22);
        await pool.flush();
        const before = pool.space().allocatedBytes;
        expect(before).toBe(3 * EXTENTS * BLOCK_SIZE_BYTES);

        const gate = pool.getVolume("v").gate;
        let held = { started: false };
        gate.runShared(() => {
          held.started = true;
        });
        let deleteSettled = false;
        const deleting = pool.deleteSnapshot("v", "old").finally(() => {
          deleteSettled = true;
        });
        deleting.catch(() => undefined);
        for (let i = 0; i < folded; i++) {
          const next = await holdBehindFold(gate);
          gate.leaveShared(); // lets the fold take one extent
          await until(`extent ${i} to be folded`, () => next.started);
          held = next;
        }
        // Stopped before its next extent; what it moved so far is committed, as a client's flush would do.
        await holdBehindFold(gate);
        expect(held.started).toBe(true);
        await pool.flush();
        expect(deleteSettled).toBe(false);
        pool.abandon();

        pool = await open();
        expect(pool.foldsFinishedAtOpen).toBe(1);
        expect(pool.listSnapshots("v")).toEqual([]);
        expect((await readAll(pool)).equals(expected)).toBe(true);
        // The overwritten snapshot blocks are given back; the head holds the other two per extent.
        expect(pool.layerBytes(pool.getVolume("v").head)).toBe(2 * EXTENTS * BLOCK_SIZE_BYTES);
        expect(pool.space().allocatedBytes).toBe(2 * EXTENTS * BLOCK_SIZE_BYTES);
        // Idempotent: a second open finds nothing left to finish.
        await pool.close();
        pool = await open();
        expect(pool.foldsFinishedAtOpen).toBe(0);
        expect((await readAll(pool)).equals(expected)).toBe(true);
      } finally {
        await pool.close();
      }
    });
  }
});
