// Reads the ledger's region back and judges every block against the ledger.
//
// The rule is linearizability of a register per block. A block's content C is
// legal iff it is a ledger block of this writer, for this offset, that was
// actually sent here, and no required write X to the block was sent after C's
// acknowledgement was received (X would then have had to replace C). A write
// never acknowledged (in flight, refused, or cut off by a dead connection)
// has no acknowledgement time: it may have landed at any moment after it was
// sent, so nothing rules it out. "Required" is every acknowledged write in
// acknowledged mode, and every write covered by an acknowledged flush (or
// acknowledged with FUA) in flushed mode; only the required write sent last
// matters, since it was sent after every earlier one. Zeroes, garbage or a
// foreign block are legal only where nothing is required.

import { ConformanceError } from "../errors.js";
import { BLOCK_BYTES, parseBlock } from "./block.js";
import type { Ledger, WriteRecord } from "./ledger.js";

/** Bytes per read while verifying. */
export const VERIFY_CHUNK_BYTES = 1024 * 1024;
/** Reads kept in flight while verifying (memory: this many chunks). */
export const VERIFY_READS_IN_FLIGHT = 4;
/** Examples a result carries. */
export const MAX_EXAMPLES = 10;

/** "acknowledged": every acknowledged write must survive. "flushed": only those an acknowledged flush (or FUA) covered. */
export type VerifyMode = "acknowledged" | "flushed";

/** Reads `lengthBytes` at `offsetBytes`; throws (ConformanceError) when it cannot. */
export type ReadFunction = (offsetBytes: number, lengthBytes: number) => Promise<Buffer>;

export interface VerifyResult {
  mode: VerifyMode;
  /** Blocks of the region read and judged. */
  blocksChecked: number;
  /** Blocks that had a write required to survive. */
  requiredBlocks: number;
  /** Blocks whose required write is gone: zeroes, foreign bytes, or an older write it replaced. */
  lostWrites: number;
  /** Blocks with a required write that read as a torn ledger block (magic intact, CRC wrong). */
  tornBlocks: number;
  /** Blocks holding a write of this writer that was never sent there (misdirected or phantom). */
  unexpected: number;
  /** The first MAX_EXAMPLES findings, each naming the block, what was expected and what was found. */
  examples: string[];
}

type Verdict = { kind: "ok" } | { kind: "lost" | "torn" | "unexpected"; found: string };

const OK: Verdict = { kind: "ok" };

function rel(ledger: Ledger, atMs: number): string {
  return `+${Math.round(atMs - ledger.startedAtMs)} ms`;
}

function describeRequired(ledger: Ledger, write: WriteRecord): string {
  const o = write.outcome;
  const acked = o.state === "acked" ? `, acknowledged ${rel(ledger, o.ackedAtMs)}` : "";
  const flushed = o.state === "acked" && o.coveredAtMs !== undefined ? `, flushed ${rel(ledger, o.coveredAtMs)}` : "";
  return `seq ${write.seq} (sent ${rel(ledger, write.sentAtMs)} on connection ${write.connection}${acked}${flushed})`;
}

function judgeOwn(ledger: Ledger, offsetBytes: number, seq: number, required: WriteRecord | undefined): Verdict {
  if (seq > ledger.lastSeq)
    return { kind: "unexpected", found: `seq ${seq}, which this writer never issued (last was ${ledger.lastSeq})` };
  const write = ledger.history(offsetBytes)?.writes.find((w) => w.seq === seq);
  if (write === undefined) {
    if (required?.seq === seq) return OK;
    // Pruned writes were acknowledged before a required write was sent, and seqs ascend with send order.
    if (required !== undefined && seq < required.seq)
      return { kind: "lost", found: `seq ${seq}, an older write that seq ${required.seq} replaced` };
    return { kind: "unexpected", found: `seq ${seq}, which this writer never sent to this block` };
  }
  if (required === undefined || ledger.settledTickOf(write) > required.sendTick) return OK;
  const acked = write.outcome.state === "acked" ? rel(ledger, write.outcome.ackedAtMs) : "?";
  return {
    kind: "lost",
    found: `seq ${seq} (sent ${rel(ledger, write.sentAtMs)}, acknowledged ${acked}), which seq ${required.seq} replaced: it was sent after that acknowledgement`,
  };
}

function judge(ledger: Ledger, offsetBytes: number, block: Buffer, required: WriteRecord | undefined): Verdict {
  const parsed = parseBlock(block);
  if (parsed === "torn")
    return required === undefined ? OK : { kind: "torn", found: "a torn ledger block (magic intact, CRC wrong)" };
  if (parsed === "zero" || parsed === "garbage") {
    return required === undefined
      ? OK
      : { kind: "lost", found: parsed === "zero" ? "zeroes" : "bytes that are not a ledger block" };
  }
  if (parsed.writer !== ledger.writerId) {
    return required === undefined
      ? OK
      : { kind: "lost", found: `a block of another writer (id ${parsed.writer}, seq ${parsed.seq})` };
  }
  if (parsed.offsetBytes !== offsetBytes) {
    return { kind: "unexpected", found: `seq ${parsed.seq}, written for offset ${parsed.offsetBytes}: a misdirected write` };
  }
  return judgeOwn(ledger, offsetBytes, parsed.seq, required);
}

/** Reads the region in order with a few reads in flight; `visit` sees each chunk once. */
async function readRegion(
  ledger: Ledger,
  read: ReadFunction,
  chunkBytes: number,
  visit: (offsetBytes: number, data: Buffer) => void,
): Promise<void> {
  const end = ledger.regionOffsetBytes + ledger.regionBytes;
  const inFlight: { offsetBytes: number; lengthBytes: number; data: Promise<Buffer> }[] = [];
  let next = ledger.regionOffsetBytes;
  const issue = (): void => {
    const lengthBytes = Math.min(chunkBytes, end - next);
    const data = read(next, lengthBytes);
    // Handled here so a failure of a later read while an earlier one is awaited is not "unhandled".
    data.catch(() => undefined);
    inFlight.push({ offsetBytes: next, lengthBytes, data });
    next += lengthBytes;
  };
  while (next < end && inFlight.length < VERIFY_READS_IN_FLIGHT) issue();
  while (inFlight.length > 0) {
    const chunk = inFlight.shift()!;
    const data = await chunk.data;
    if (data.length !== chunk.lengthBytes) {
      throw new ConformanceError({
        code: "TARGET_FAILED",
        message: `read at offset ${chunk.offsetBytes} returned ${data.length} bytes, expected ${chunk.lengthBytes}`,
      });
    }
    if (next < end) issue();
    visit(chunk.offsetBytes, data);
  }
}

/**
 * Reads the ledger's region through `read` and judges every block (see the
 * rule above). Throws ConformanceError INVALID_ARGUMENT for flushed mode when
 * the ledger had to drop its flush history, and whatever `read` throws.
 */
export async function verifyLedger(
  ledger: Ledger,
  read: ReadFunction,
  options: {
    mode: VerifyMode;
    chunkBytes?: number;
    /** Judges only the blocks this accepts (another writer took the rest over; its own ledger judges them). */
    only?: (offsetBytes: number) => boolean;
  },
): Promise<VerifyResult> {
  const { mode } = options;
  if (mode === "flushed" && ledger.flushHistoryDropped !== undefined) {
    throw new ConformanceError({
      code: "INVALID_ARGUMENT",
      message: `flushed-mode verification needs the flush history, which this ledger dropped (${ledger.flushHistoryDropped}); verify in "acknowledged" mode`,
    });
  }
  const chunkBytes = Math.max(BLOCK_BYTES, Math.floor((options.chunkBytes ?? VERIFY_CHUNK_BYTES) / BLOCK_BYTES) * BLOCK_BYTES);
  const result: VerifyResult = {
    mode,
    blocksChecked: 0,
    requiredBlocks: 0,
    lostWrites: 0,
    tornBlocks: 0,
    unexpected: 0,
    examples: [],
  };
  await readRegion(ledger, read, chunkBytes, (chunkOffset, data) => {
    for (let at = 0; at < data.length; at += BLOCK_BYTES) {
      const offsetBytes = chunkOffset + at;
      if (options.only !== undefined && !options.only(offsetBytes)) continue;
      const history = ledger.history(offsetBytes);
      const required = mode === "acknowledged" ? history?.lastAcked : history?.lastCovered;
      const verdict = judge(ledger, offsetBytes, data.subarray(at, at + BLOCK_BYTES), required);
      result.blocksChecked++;
      if (required !== undefined) result.requiredBlocks++;
      if (verdict.kind === "ok") continue;
      if (verdict.kind === "lost") result.lostWrites++;
      else if (verdict.kind === "torn") result.tornBlocks++;
      else result.unexpected++;
      if (result.examples.length < MAX_EXAMPLES) {
        const expected =
          required === undefined ? "" : `expected ${describeRequired(ledger, required)} or a write concurrent with or after it, `;
        result.examples.push(`block at offset ${offsetBytes} (${verdict.kind}): ${expected}found ${verdict.found}`);
      }
    }
  });
  return result;
}
