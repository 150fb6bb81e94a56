// The ledger's 4 KiB block: a header naming the block's own offset, a
// global sequence number and the writer, a payload derived from (offset,
// seq), and a CRC-32 over everything before it. A block read back either
// proves which write it is, or shows what went wrong: zeroes, foreign bytes,
// or a torn mix of two writes (the header survives, the CRC does not).

import assert from "node:assert/strict";
import zlib from "node:zlib";

/** Every ledger write is one aligned block of this size. */
export const BLOCK_BYTES = 4096;
/** "KLSNLDG1": marks a ledger block. */
export const BLOCK_MAGIC = Buffer.from("KLSNLDG1", "latin1");
/** Header: magic 8, offset 8, seq 8, writer id 4, sent time 8, reserved to 64. */
export const HEADER_BYTES = 64;
/** The CRC-32 sits in the last 4 bytes and covers everything before it. */
export const CRC_AT = BLOCK_BYTES - 4;

const OFFSET_AT = 8;
const SEQ_AT = 16;
const WRITER_AT = 24;
const SENT_AT = 28;
const ZERO_BLOCK = Buffer.alloc(BLOCK_BYTES);

/** What a well-formed ledger block says about itself. */
export interface BlockStamp {
  /** Byte offset the block was written to (a multiple of BLOCK_BYTES). */
  offsetBytes: number;
  /** Global sequence number of the write, unique per writer. */
  seq: number;
  /** Id of the writer run that wrote it; another run's blocks are foreign. */
  writer: number;
  /** Writer's wall clock when the write was sent (ms since the epoch), for messages. */
  sentAtMs: number;
}

/**
 * What a block read back is: a stamp, all zeroes, a torn ledger block (magic
 * intact, CRC wrong: parts of two writes, or a partial write), or garbage
 * (anything else).
 */
export type ParsedBlock = BlockStamp | "zero" | "torn" | "garbage";

function writeU64(buf: Buffer, value: number, at: number): void {
  buf.writeUInt32BE(Math.floor(value / 2 ** 32), at);
  buf.writeUInt32BE(value % 2 ** 32, at + 4);
}

function readU64(buf: Buffer, at: number): number {
  return buf.readUInt32BE(at) * 2 ** 32 + buf.readUInt32BE(at + 4);
}

/** xorshift32 seeded from (block index, seq): the payload is a function of the write, so a stale or mixed payload shows. */
function fillPayload(buf: Buffer, offsetBytes: number, seq: number): void {
  const blockIndex = offsetBytes / BLOCK_BYTES;
  let x = (Math.imul(blockIndex | 0, 0x9e3779b1) ^ Math.imul((blockIndex / 2 ** 32) | 0, 0x85ebca77)) >>> 0;
  x = (x ^ Math.imul(seq | 0, 0xc2b2ae3d) ^ Math.imul((seq / 2 ** 32) | 0, 0x27d4eb2f)) >>> 0;
  if (x === 0) x = 0x6d2b79f5;
  for (let at = HEADER_BYTES; at < CRC_AT; at += 4) {
    x ^= x << 13;
    x ^= x >>> 17;
    x ^= x << 5;
    buf.writeUInt32BE(x >>> 0, at);
  }
}

/**
 * Writes the block for write `seq` of `writer` to `offsetBytes` into
 * `options.into` (a fresh buffer when absent) and returns it.
 */
export function stampBlock(
  offsetBytes: number,
  seq: number,
  writer: number,
  options: { sentAtMs?: number; into?: Buffer } = {},
): Buffer {
  assert.ok(
    Number.isSafeInteger(offsetBytes) && offsetBytes >= 0 && offsetBytes % BLOCK_BYTES === 0,
    `offset ${offsetBytes} is not block-aligned`,
  );
  assert.ok(Number.isSafeInteger(seq) && seq >= 0, `seq ${seq} is not a non-negative integer`);
  assert.ok(Number.isInteger(writer) && writer >= 0 && writer <= 0xffff_ffff, `writer ${writer} is not a 32-bit id`);
  const buf = options.into ?? Buffer.allocUnsafe(BLOCK_BYTES);
  assert.equal(buf.length, BLOCK_BYTES, "a ledger block buffer is BLOCK_BYTES long");
  BLOCK_MAGIC.copy(buf, 0);
  writeU64(buf, offsetBytes, OFFSET_AT);
  writeU64(buf, seq, SEQ_AT);
  buf.writeUInt32BE(writer, WRITER_AT);
  writeU64(buf, Math.max(0, Math.floor(options.sentAtMs ?? Date.now())), SENT_AT);
  buf.fill(0, SENT_AT + 8, HEADER_BYTES);
  fillPayload(buf, offsetBytes, seq);
  buf.writeUInt32BE(zlib.crc32(buf.subarray(0, CRC_AT)), CRC_AT);
  return buf;
}

/** Classifies a block read back; see {@link ParsedBlock}. */
export function parseBlock(buf: Buffer): ParsedBlock {
  assert.equal(buf.length, BLOCK_BYTES, "parseBlock takes exactly one block");
  if (!buf.subarray(0, BLOCK_MAGIC.length).equals(BLOCK_MAGIC)) return buf.equals(ZERO_BLOCK) ? "zero" : "garbage";
  if (zlib.crc32(buf.subarray(0, CRC_AT)) !== buf.readUInt32BE(CRC_AT)) return "torn";
  const offsetBytes = readU64(buf, OFFSET_AT);
  const seq = readU64(buf, SEQ_AT);
  // A valid CRC over an impossible header is not a block this code wrote.
  if (!Number.isSafeInteger(offsetBytes) || offsetBytes % BLOCK_BYTES !== 0 || !Number.isSafeInteger(seq)) return "garbage";
  return { offsetBytes, seq, writer: buf.readUInt32BE(WRITER_AT), sentAtMs: readU64(buf, SENT_AT) };
}
