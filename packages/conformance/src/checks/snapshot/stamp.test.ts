import { describe, expect, it } from "vitest";
import { decodeUnit, formatContent, makeUnit, SECTOR_BYTES } from "./stamp.js";

const UNIT = 16 * 1024;

describe("stamped units", () => {
  it("a unit written reads back as its stamp, and zeros as zeros", () => {
    const stamp = { stream: 7, unit: 42, version: 3 };
    const back = Buffer.concat([Buffer.alloc(UNIT), makeUnit(stamp, UNIT)]);
    expect(decodeUnit(back, UNIT, UNIT)).toEqual({ kind: "stamp", stamp });
    expect(decodeUnit(back, 0, UNIT)).toEqual({ kind: "zeros" });
  });

  it("half of one write and half of the next is torn, and says which sectors hold which", () => {
    const a = makeUnit({ stream: 1, unit: 5, version: 1 }, UNIT);
    const b = makeUnit({ stream: 1, unit: 5, version: 2 }, UNIT);
    const torn = Buffer.concat([a.subarray(0, UNIT / 2), b.subarray(UNIT / 2)]);
    const c = decodeUnit(torn, 0, UNIT);
    expect(c.kind).toBe("torn");
    expect(formatContent(c)).toBe("torn (sectors 0-15: stream 1 unit 5 v1; sectors 16-31: stream 1 unit 5 v2)");
  });

  it("a sector out of place, a flipped byte and a unit of another offset are not the stamp", () => {
    const u = makeUnit({ stream: 1, unit: 5, version: 1 }, UNIT);
    const swapped = Buffer.from(u);
    u.copy(swapped, 0, SECTOR_BYTES, 2 * SECTOR_BYTES);
    expect(formatContent(decodeUnit(swapped, 0, UNIT))).toMatch(/^torn \(sectors 0-0: stream 1 unit 5 v1 sector 1 \(misplaced\)/);
    const flipped = Buffer.from(u);
    flipped[SECTOR_BYTES * 3 + 100]! ^= 1;
    expect(formatContent(decodeUnit(flipped, 0, UNIT))).toBe(
      "torn (sectors 0-2: stream 1 unit 5 v1; sectors 3-3: garbage; sectors 4-31: stream 1 unit 5 v1)",
    );
    // A whole unit of another offset decodes as that unit's stamp: the caller sees the wrong unit number.
    expect(decodeUnit(makeUnit({ stream: 1, unit: 9, version: 1 }, UNIT), 0, UNIT)).toEqual({
      kind: "stamp",
      stamp: { stream: 1, unit: 9, version: 1 },
    });
  });
});
