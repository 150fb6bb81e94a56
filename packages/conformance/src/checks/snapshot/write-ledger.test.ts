import { describe, expect, it } from "vitest";
import { judgeChunk, WriteLedger } from "./write-ledger.js";

/** A ledger on a hand-driven clock, with chunk 0 written at versions 0..3 at the given send and ack times. */
function ledgerWith(times: readonly [sentAtMs: number, ackedAtMs: number | null][]) {
  let clock = 0;
  const ledger = new WriteLedger(1, () => clock);
  for (const [sent, acked] of times) {
    clock = sent;
    const record = ledger.begin(0);
    if (acked === null) continue;
    clock = acked;
    ledger.settle(record, undefined);
  }
  return ledger;
}

const stamp = (version: number, unit = 0) => ({ kind: "stamp" as const, stamp: { stream: 1, unit, version } });

describe("judging a chunk of a snapshot taken under writes", () => {
  // v0 acked at 10, v1 acked at 30, v2 sent at 40 and acked at 60, v3 sent at 70 and never acked.
  const ledger = ledgerWith([
    [0, 10],
    [20, 30],
    [40, 60],
    [70, null],
  ]);

  it("holds the last write acknowledged before the call, or one sent before it returned", () => {
    // Call from 50 to 65: v1 was acked before it, v2 was in flight across it.
    expect(ledger.window(0, 50, 65)).toEqual({ min: 1, max: 2 });
    expect(judgeChunk(ledger, 1, 0, stamp(1), 50, 65)).toBeUndefined();
    expect(judgeChunk(ledger, 1, 0, stamp(2), 50, 65)).toBeUndefined();
  });

  it("an older write than the last acknowledged one is a lost write", () => {
    expect(judgeChunk(ledger, 1, 0, stamp(0), 50, 65)).toBe(
      "chunk 0: expected v1..v2 (v1 acknowledged before the call started, v2 the last sent before it returned), " +
        "found older v0: an acknowledged write is missing from the snapshot",
    );
  });

  it("a write sent after the call returned is too new, by how much", () => {
    expect(judgeChunk(ledger, 1, 0, stamp(3), 50, 65)).toBe(
      "chunk 0: expected v1..v2 (v1 acknowledged before the call started, v2 the last sent before it returned), " +
        "found v3, sent 5 ms after the call returned",
    );
  });

  it("zeros, another chunk's write and a version never written are named", () => {
    expect(judgeChunk(ledger, 1, 0, { kind: "zeros" }, 35, 38)).toBe(
      "chunk 0: expected v1 (acknowledged before the call started), found zeros",
    );
    expect(judgeChunk(ledger, 1, 0, stamp(1, 7), 35, 38)).toMatch(/found stream 1 unit 7 v1$/);
    expect(judgeChunk(ledger, 1, 0, stamp(9), 35, 38)).toMatch(/found v9, which was never written$/);
  });
});
