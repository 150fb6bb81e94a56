import fs from "node:fs";
import { crc32 } from "node:zlib";
import { KeelsonError } from "@keelson/sdk";
import type { CatalogChange, CatalogSnapshot, EntryRecord } from "./catalog.js";
import { entryRecordBytes, MAX_CATALOG_BYTES, type PoolLayout, stateBytesOf } from "./layout.js";

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

function writeEntry(entry: EntryRecord, out: Buffer, at: number): number {
  out.writeUInt32BE(entry.layerId, at);
  out.writeUInt32BE(entry.logical, at + 4);
  out.writeInt32BE(entry.phys, at + 8);
  out.set(entry.states, at + 12);
  return at + entryRecordBytes(entry.states.length);
}

function readEntry(buf: Buffer, at: number, stateBytes: number): EntryRecord {
  return {
    layerId: buf.readUInt32BE(at),
    logical: buf.readUInt32BE(at + 4),
    phys: buf.readInt32BE(at + 8),
    states: new Uint8Array(buf.subarray(at + 12, at + 12 + stateBytes)),
  };
}

/** Encodes one journal batch (header + records), padded to 4 KiB. */
export function encodeBatch(
  seq: number,
  changes: readonly CatalogChange[],
  entries: readonly EntryRecord[],
  salt: number,
): Buffer {
  const jsons = changes.map((c) => Buffer.from(JSON.stringify(c), "utf8"));
  const size =
    jsons.reduce((n, j) => n + 5 + j.length, 0) + entries.reduce((n, e) => n + 1 + entryRecordBytes(e.states.length), 0);
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
      entries.push(readEntry(payload, at + 1, stateBytes));
      at += 1 + entryRecordBytes(stateBytes);
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
  const payload = Buffer.alloc(8 + json.length + entries.reduce((n, e) => n + entryRecordBytes(e.states.length), 0));
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
  const recordBytes = entryRecordBytes(stateBytes);
  for (let i = 0, at = 8 + jsonLen; i < count; i++, at += recordBytes) entries.push(readEntry(payload, at, stateBytes));
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
