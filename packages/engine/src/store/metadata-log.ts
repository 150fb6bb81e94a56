import assert from "node:assert";
import fs from "node:fs";
import { crc32 } from "node:zlib";
import { KeelsonError } from "@keelson/sdk";
import { BlockState, getState } from "./block-states.js";
import type { CatalogChange, CatalogSnapshot, EntryRecord } from "./catalog.js";
import { entryRecordBytes, MAPPED_BLOCK_BYTES, MAX_CATALOG_BYTES, type PoolLayout, stateBytesOf } from "./layout.js";

// On-disk metadata is two checkpoint slots (the newer valid one wins) and a
// journal of batches after it. Every commit gets the next sequence number;
// replay applies journal batches whose numbers continue the checkpoint's
// without a gap, so a torn batch or one left from an older journal
// generation ends the replay instead of being applied.

const CHECKPOINT_MAGIC = 0x4b434b50; // "KCKP"
const BATCH_MAGIC = 0x4b4a4e4c; // "KJNL"
const HEADER_BYTES = 32;
const ALIGN_BYTES = 4096;
const RECORD_CHANGE = 1;
const RECORD_ENTRY = 2;

function alignUp(n: number): number {
  return Math.ceil(n / ALIGN_BYTES) * ALIGN_BYTES;
}

// Checksums are seeded with a per-pool salt (from the pool uid), so records
// left on a device by an earlier format never pass as this pool's.
function encodeHeader(magic: number, seq: number, payload: Buffer, out: Buffer, salt: number): void {
  out.writeUInt32BE(magic, 0);
  out.writeUIntBE(seq, 4, 6);
  out.writeUInt32BE(payload.length, 10);
  out.writeUInt32BE(crc32(payload, salt), 14);
  out.writeUInt32BE(crc32(out.subarray(0, 18), salt), 18);
}

/** The checksum seed of a pool's metadata records. */
export function metadataSalt(poolUid: string): number {
  return crc32(poolUid);
}

interface Header {
  seq: number;
  payloadBytes: number;
  payloadCrc: number;
}

function decodeHeader(magic: number, buf: Buffer, salt: number): Header | null {
  if (buf.length < HEADER_BYTES || buf.readUInt32BE(0) !== magic) return null;
  if (crc32(buf.subarray(0, 18), salt) !== buf.readUInt32BE(18)) return null;
  return { seq: buf.readUIntBE(4, 6), payloadBytes: buf.readUInt32BE(10), payloadCrc: buf.readUInt32BE(14) };
}

/** The phys field of an entry whose blocks are mapped one by one; the block numbers follow its states. */
const PHYS_BLOCK_MAPPED = -2;

/** Blocks of an extent that hold data in `states`. */
function dataBlockCount(states: Uint8Array): number {
  let n = 0;
  for (let b = 0; b < states.length * 4; b++) if (getState(states, b) === BlockState.DATA) n++;
  return n;
}

/** Bytes of one entry's record: fixed, plus a block number per data block of a block-mapped entry. */
function entryBytes(entry: EntryRecord): number {
  const mapped = entry.blocks ? dataBlockCount(entry.states) * MAPPED_BLOCK_BYTES : 0;
  return entryRecordBytes(entry.states.length) + mapped;
}

function writeEntry(entry: EntryRecord, out: Buffer, at: number): number {
  out.writeUInt32BE(entry.layerId, at);
  out.writeUInt32BE(entry.logical, at + 4);
  out.writeInt32BE(entry.blocks ? PHYS_BLOCK_MAPPED : entry.phys, at + 8);
  out.set(entry.states, at + 12);
  let next = at + entryRecordBytes(entry.states.length);
  if (!entry.blocks) return next;
  assert(entry.phys === -1, "a block-mapped entry holds no whole extent");
  // Only blocks holding data: a block allocated for a write still in flight is free again after a crash.
  for (let b = 0; b < entry.states.length * 4; b++) {
    if (getState(entry.states, b) !== BlockState.DATA) continue;
    const block = entry.blocks[b] as number;
    assert(block >= 0, "a data block of a block-mapped entry has a physical block");
    out.writeInt32BE(block, next);
    next += MAPPED_BLOCK_BYTES;
  }
  return next;
}

/** Decodes one entry record at `at`; `end` is where it ends. */
function readEntry(buf: Buffer, at: number, stateBytes: number): { entry: EntryRecord; end: number } {
  const phys = buf.readInt32BE(at + 8);
  const states = new Uint8Array(buf.subarray(at + 12, at + 12 + stateBytes));
  const entry: EntryRecord = { layerId: buf.readUInt32BE(at), logical: buf.readUInt32BE(at + 4), phys, states };
  let end = at + entryRecordBytes(stateBytes);
  if (phys !== PHYS_BLOCK_MAPPED) return { entry, end };
  entry.phys = -1;
  const blocks = new Int32Array(stateBytes * 4).fill(-1);
  for (let b = 0; b < stateBytes * 4; b++) {
    if (getState(states, b) !== BlockState.DATA) continue;
    if (end + MAPPED_BLOCK_BYTES > buf.length) {
      throw new KeelsonError({ code: "METADATA_CORRUPT", message: "a block-mapped entry's block numbers are cut short" });
    }
    const block = buf.readInt32BE(end);
    if (block < 0) {
      throw new KeelsonError({
        code: "METADATA_CORRUPT",
        message: `a data block of a block-mapped entry has block number ${block}`,
      });
    }
    blocks[b] = block;
    end += MAPPED_BLOCK_BYTES;
  }
  entry.blocks = blocks;
  return { entry, end };
}

/** Encodes one journal batch (header + records), padded to 4 KiB. */
export function encodeBatch(
  seq: number,
  changes: readonly CatalogChange[],
  entries: readonly EntryRecord[],
  salt: number,
): Buffer {
  const jsons = changes.map((c) => Buffer.from(JSON.stringify(c), "utf8"));
  const size = jsons.reduce((n, j) => n + 5 + j.length, 0) + entries.reduce((n, e) => n + 1 + entryBytes(e), 0);
  const payload = Buffer.alloc(size);
  let at = 0;
  for (const j of jsons) {
    payload.writeUInt8(RECORD_CHANGE, at);
    payload.writeUInt32BE(j.length, at + 1);
    j.copy(payload, at + 5);
    at += 5 + j.length;
  }
  for (const e of entries) {
    payload.writeUInt8(RECORD_ENTRY, at);
    at = writeEntry(e, payload, at + 1);
  }
  const out = Buffer.alloc(alignUp(HEADER_BYTES + payload.length));
  encodeHeader(BATCH_MAGIC, seq, payload, out, salt);
  payload.copy(out, HEADER_BYTES);
  return out;
}

/** The changes and entries of one decoded journal batch. */
export interface DecodedBatch {
  seq: number;
  changes: CatalogChange[];
  entries: EntryRecord[];
  /** Bytes the batch occupies in the journal (padded). */
  bytes: number;
}

function decodeBatchPayload(payload: Buffer, stateBytes: number): Pick<DecodedBatch, "changes" | "entries"> {
  const changes: CatalogChange[] = [];
  const entries: EntryRecord[] = [];
  let at = 0;
  while (at < payload.length) {
    const type = payload.readUInt8(at);
    if (type === RECORD_CHANGE) {
      const len = payload.readUInt32BE(at + 1);
      changes.push(JSON.parse(payload.toString("utf8", at + 5, at + 5 + len)) as CatalogChange);
      at += 5 + len;
    } else if (type === RECORD_ENTRY) {
      const { entry, end } = readEntry(payload, at + 1, stateBytes);
      entries.push(entry);
      at = end;
    } else {
      throw new KeelsonError({ code: "METADATA_CORRUPT", message: `unknown journal record type ${type}` });
    }
  }
  return { changes, entries };
}

/** Encodes a checkpoint (whole catalog and every entry). */
export function encodeCheckpoint(seq: number, catalog: CatalogSnapshot, entries: readonly EntryRecord[], salt: number): Buffer {
  const json = Buffer.from(JSON.stringify(catalog), "utf8");
  if (json.length > MAX_CATALOG_BYTES) {
    throw new KeelsonError({ code: "NO_SPACE", message: `catalog of ${json.length} bytes exceeds ${MAX_CATALOG_BYTES}` });
  }
  const payload = Buffer.alloc(8 + json.length + entries.reduce((n, e) => n + entryBytes(e), 0));
  payload.writeUInt32BE(json.length, 0);
  json.copy(payload, 4);
  payload.writeUInt32BE(entries.length, 4 + json.length);
  let at = 8 + json.length;
  for (const e of entries) at = writeEntry(e, payload, at);
  const out = Buffer.alloc(alignUp(HEADER_BYTES + payload.length));
  encodeHeader(CHECKPOINT_MAGIC, seq, payload, out, salt);
  payload.copy(out, HEADER_BYTES);
  return out;
}

/** What a replay recovers from the pool's metadata area. */
export interface RecoveredMetadata {
  checkpoint: { seq: number; slot: 0 | 1; catalog: CatalogSnapshot; entries: EntryRecord[] } | null;
  batches: DecodedBatch[];
  /** Journal offset (relative to the journal start) where the next batch goes. */
  journalTailBytes: number;
  /** Sequence number of the next commit. */
  nextSeq: number;
}

function readAt(fd: number, position: number, length: number): Buffer {
  const buf = Buffer.alloc(length);
  let done = 0;
  while (done < length) {
    const n = fs.readSync(fd, buf, done, length - done, position + done);
    if (n === 0) break;
    done += n;
  }
  return buf;
}

function readCheckpoint(fd: number, layout: PoolLayout, slot: 0 | 1): RecoveredMetadata["checkpoint"] {
  const offset = layout.slotOffsets[slot];
  const salt = metadataSalt(layout.uid);
  const header = decodeHeader(CHECKPOINT_MAGIC, readAt(fd, offset, HEADER_BYTES), salt);
  if (!header || HEADER_BYTES + header.payloadBytes > layout.slotBytes) return null;
  const payload = readAt(fd, offset + HEADER_BYTES, header.payloadBytes);
  if (crc32(payload, salt) !== header.payloadCrc) return null;
  const jsonLen = payload.readUInt32BE(0);
  const catalog = JSON.parse(payload.toString("utf8", 4, 4 + jsonLen)) as CatalogSnapshot;
  const count = payload.readUInt32BE(4 + jsonLen);
  const entries: EntryRecord[] = [];
  const stateBytes = stateBytesOf(layout.extentSizeBytes);
  for (let i = 0, at = 8 + jsonLen; i < count; i++) {
    const { entry, end } = readEntry(payload, at, stateBytes);
    entries.push(entry);
    at = end;
  }
  return { seq: header.seq, slot, catalog, entries };
}

/** Reads the newest valid checkpoint and the journal batches that follow it. */
export function recoverMetadata(fd: number, layout: PoolLayout): RecoveredMetadata {
  const a = readCheckpoint(fd, layout, 0);
  const b = readCheckpoint(fd, layout, 1);
  const checkpoint = a && b ? (a.seq >= b.seq ? a : b) : (a ?? b);
  const salt = metadataSalt(layout.uid);
  let expected = checkpoint ? checkpoint.seq + 1 : 1;
  const batches: DecodedBatch[] = [];
  let tail = 0;
  while (tail + HEADER_BYTES <= layout.journalBytes) {
    const header = decodeHeader(BATCH_MAGIC, readAt(fd, layout.journalOffset + tail, HEADER_BYTES), salt);
    if (!header || header.seq !== expected) break;
    const bytes = alignUp(HEADER_BYTES + header.payloadBytes);
    if (tail + bytes > layout.journalBytes) break;
    const payload = readAt(fd, layout.journalOffset + tail + HEADER_BYTES, header.payloadBytes);
    if (crc32(payload, salt) !== header.payloadCrc) break;
    batches.push({ seq: header.seq, bytes, ...decodeBatchPayload(payload, stateBytesOf(layout.extentSizeBytes)) });
    tail += bytes;
    expected++;
  }
  return { checkpoint, batches, journalTailBytes: tail, nextSeq: expected };
}
