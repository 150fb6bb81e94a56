import fs from "node:fs";
import os from "node:os";
import path from "node:path";
import { afterEach, describe, expect, it } from "vitest";
import { decodeActivityLog, encodeActivityLog, MAX_ACTIVITY_EXTENTS } from "./activity-record.js";
import { Pool } from "./pool.js";
import { acceptEveryReservation } from "./reservations.js";

const MIB = 1024 * 1024;
const dirs: string[] = [];
afterEach(() => {
  for (const d of dirs.splice(0)) fs.rmSync(d, { recursive: true, force: true });
});

const log = (sequence: number, extents: number[], all = false) => ({ sequence, extentBytes: 4 * MIB, all, extents });

describe("activity log payload", () => {
  it("round-trips, taking the epoch from the connection", () => {
    expect(decodeActivityLog(encodeActivityLog(log(7, [0, 3, 9])), 5)).toEqual({ epoch: 5, ...log(7, [0, 3, 9]) });
    expect(decodeActivityLog(encodeActivityLog(log(1, [], true)), 2)).toEqual({ epoch: 2, ...log(1, [], true) });
  });

  it("refuses what no engine sends: short, unordered, bad sizes or flags, too many extents", () => {
    const good = encodeActivityLog(log(2, [1, 2]));
    const cases: Buffer[] = [
      good.subarray(0, 10),
      encodeActivityLog(log(2, [2, 1])),
      encodeActivityLog(log(0, [])),
      encodeActivityLog({ ...log(2, []), extentBytes: 3000 }),
      Buffer.concat([good, Buffer.alloc(4)]),
    ];
    const badFlags = Buffer.from(good);
    badFlags.writeUInt32BE(6, 12);
    cases.push(badFlags);
    for (const c of cases) expect(() => decodeActivityLog(c, 1)).toThrow(expect.objectContaining({ code: "INVALID_ARGUMENT" }));
    expect(() =>
      encodeActivityLog(
        log(
          1,
          Array.from({ length: MAX_ACTIVITY_EXTENTS + 1 }, (_, i) => i),
        ),
      ),
    ).toThrow(expect.objectContaining({ code: "INVALID_ARGUMENT" }));
  });
});

describe("Pool.saveActivityLog", () => {
  it("keeps the log with the volume durably; refuses an epoch the volume is fenced past or not fenced at, and a save older than the one kept", async () => {
    const dir = fs.mkdtempSync(path.join(os.tmpdir(), "keelson-activity-"));
    dirs.push(dir);
    const file = path.join(dir, "pool.img");
    let pool = await Pool.open({ admit: acceptEveryReservation, path: file, createSizeBytes: 128 * MIB });
    await pool.createVolume({ name: "db", sizeBytes: 64 * MIB });
    await pool.fenceVolume("db", 3);
    await pool.saveActivityLog("db", { epoch: 3, ...log(2, [4]) });
    // A save that arrives late (sequence 1 after 2) is refused, as is a stale epoch.
    await expect(pool.saveActivityLog("db", { epoch: 3, ...log(1, [0, 1]) })).rejects.toMatchObject({ code: "INVALID_ARGUMENT" });
    await expect(pool.saveActivityLog("db", { epoch: 2, ...log(9, []) })).rejects.toMatchObject({ code: "EPOCH_STALE" });
    // Nor under an epoch nobody fenced it at: such a log would outrank every later frontend's.
    await expect(pool.saveActivityLog("db", { epoch: 99, ...log(1, []) })).rejects.toMatchObject({ code: "INVALID_ARGUMENT" });
    await pool.close();
    pool = await Pool.open({ admit: acceptEveryReservation, path: file });
    expect(pool.findVolume("db")?.record.activity).toEqual({ epoch: 3, ...log(2, [4]) });
    // A newer epoch replaces it (the next frontend's first save), and fencing keeps it.
    await pool.fenceVolume("db", 4);
    expect(pool.findVolume("db")?.record.activity?.epoch).toBe(3);
    await pool.saveActivityLog("db", { epoch: 4, ...log(1, []) });
    expect(pool.findVolume("db")?.record.activity).toEqual({ epoch: 4, ...log(1, []) });
    await pool.close();
  });
});
