import assert from "node:assert";
import { randomUUID } from "node:crypto";
import { crc32 } from "node:zlib";
import { KeelsonError } from "@keelson/sdk";

/** Smallest unit of volume data tracked by the store; sub-block writes are read-modify-write. */
export const BLOCK_SIZE_BYTES = 4096;
/** Default allocation unit of thin volumes on a pool (chosen at format time). */
export const DEFAULT_EXTENT_SIZE_BYTES = 1024 * 1024;
/** Smallest extent: four blocks, so one byte of block states. Small extents suit tests, not production. */
export const MIN_EXTENT_SIZE_BYTES = 4 * BLOCK_SIZE_BYTES;
export const MAX_EXTENT_SIZE_BYTES = 64 * 1024 * 1024;

const SUPERBLOCK_BYTES = 4096;
const SUPERBLOCK_MAGIC = "KEELSONP";
/**
 * Version 2 pools may map an extent's blocks one by one (sub-extent allocation) and keep room in
 * each checkpoint slot for those maps; version 1 pools (formatted before) open with whole-extent
 * allocation only, as they were written.
 */
const FORMAT_VERSION = 2;
const FORMAT_VERSIONS_READ = [1, 2];
/** Most physical blocks a pool may map one by one: a block number is a signed 32-bit integer on disk. */
const MAX_MAPPED_BLOCKS = 2 ** 31 - 1;
/** Bytes a checkpoint spends per block mapped one by one (its physical block number). */
export const MAPPED_BLOCK_BYTES = 4;
const MIB = 1024 * 1024;
/** Largest catalog (volumes and layers, as JSON) a checkpoint can hold. */
export const MAX_CATALOG_BYTES = 4 * MIB;
/** Bytes of block states per extent entry: two bits per block (absent, data, zero). */
export function stateBytesOf(extentSizeBytes: number): number {
  return extentSizeBytes / BLOCK_SIZE_BYTES / 4;
}

/** Bytes of one extent-entry record in checkpoints and journal batches. */
export function entryRecordBytes(stateBytes: number): number {
  return 12 + stateBytes;
}
const MIN_JOURNAL_BYTES = 4 * MIB;
const MAX_JOURNAL_BYTES = 64 * MIB;
/**
 * Share of a pool with sub-extent allocation that each checkpoint slot gives
 * to extent entries on top of two per extent. A layer takes an entry for each
 * extent it writes in, so 4 KiB writes scattered over snapshots take an entry
 * each, and at two entries per extent a 256 MiB pool reported itself full
 * with 2.5% of its space used. A byte budget, not a count per block: such
 * writes need the same number of entries whatever the extent size, while an
 * entry's record grows with it (12 bytes plus 2 bits a block: 76 bytes with
 * 1 MiB extents, 4,108 with 64 MiB ones).
 */
const EXTRA_ENTRIES_SHARE = 1 / 400;
/** A pool must hold at least this many data extents after its metadata. */
export const MIN_DATA_EXTENTS = 8;

/** Where everything lives on a pool device; fixed at format time. */
export interface PoolLayout {
  uid: string;
  sizeBytes: number;
  extentSizeBytes: number;
  blockSizeBytes: number;
  /** Checkpoint slots A and B, each `slotBytes` long. */
  slotOffsets: readonly [number, number];
  slotBytes: number;
  journalOffset: number;
  journalBytes: number;
  dataOffset: number;
  extentCount: number;
  /** Most extent entries (data-bearing or zero markers) a checkpoint can hold. */
  maxEntries: number;
  /**
   * Whether extents' blocks may be allocated one by one (issue 16): each checkpoint slot then has
   * room for a block number per data block. False on version 1 pools and on pools too large for
   * 32-bit block numbers.
   */
  subExtent: boolean;
}

function roundUp(n: number, to: number): number {
  return Math.ceil(n / to) * to;
}

/** INVALID_ARGUMENT unless `extentSizeBytes` is a power of two in the supported range. */
export function validateExtentSize(extentSizeBytes: number): number {
  const ok =
    Number.isSafeInteger(extentSizeBytes) &&
    extentSizeBytes >= MIN_EXTENT_SIZE_BYTES &&
    extentSizeBytes <= MAX_EXTENT_SIZE_BYTES &&
    (extentSizeBytes & (extentSizeBytes - 1)) === 0;
  if (ok) return extentSizeBytes;
  throw new KeelsonError({
    code: "INVALID_ARGUMENT",
    message: `invalid extent size ${extentSizeBytes}: use a power of two from ${MIN_EXTENT_SIZE_BYTES} to ${MAX_EXTENT_SIZE_BYTES} bytes`,
  });
}

/** Plans the layout of a new pool of `sizeBytes`; NO_SPACE when it is too small to hold any data. */
export function planLayout(
  sizeBytes: number,
  uid: string = randomUUID(),
  extentSizeBytes: number = DEFAULT_EXTENT_SIZE_BYTES,
): PoolLayout {
  validateExtentSize(extentSizeBytes);
  const roughExtents = Math.floor(sizeBytes / extentSizeBytes);
  const roughBlocks = Math.floor(sizeBytes / BLOCK_SIZE_BYTES);
  const subExtent = roughBlocks <= MAX_MAPPED_BLOCKS;
  const extraEntries = subExtent
    ? Math.floor((sizeBytes * EXTRA_ENTRIES_SHARE) / entryRecordBytes(stateBytesOf(extentSizeBytes)))
    : 0;
  const maxEntries = 2 * roughExtents + 1024 + extraEntries;
  const mapBytes = subExtent ? roughBlocks * MAPPED_BLOCK_BYTES : 0;
  const slotBytes = roundUp(
    4096 + MAX_CATALOG_BYTES + maxEntries * entryRecordBytes(stateBytesOf(extentSizeBytes)) + mapBytes,
    MIB,
  );
  const journalBytes = Math.min(MAX_JOURNAL_BYTES, Math.max(MIN_JOURNAL_BYTES, roundUp(sizeBytes / 64, MIB)));
  const slotA = MIB;
  const slotB = slotA + slotBytes;
  const journalOffset = slotB + slotBytes;
  const dataOffset = journalOffset + journalBytes;
  const extentCount = Math.floor((sizeBytes - dataOffset) / extentSizeBytes);
  if (extentCount < MIN_DATA_EXTENTS) {
    const needed = dataOffset + MIN_DATA_EXTENTS * extentSizeBytes;
    throw new KeelsonError({
      code: "NO_SPACE",
      message: `pool of ${sizeBytes} bytes is too small: it needs at least ${needed} bytes (metadata plus ${MIN_DATA_EXTENTS} extents)`,
    });
  }
  return {
    uid,
    sizeBytes,
    extentSizeBytes,
    blockSizeBytes: BLOCK_SIZE_BYTES,
    slotOffsets: [slotA, slotB],
    slotBytes,
    journalOffset,
    journalBytes,
    dataOffset,
    extentCount,
    maxEntries,
    subExtent,
  };
}

/** Encodes the superblock (4 KiB, CRC-protected). */
export function encodeSuperblock(layout: PoolLayout): Buffer {
  const buf = Buffer.alloc(SUPERBLOCK_BYTES);
  buf.write(SUPERBLOCK_MAGIC, 0, "ascii");
  const json = Buffer.from(JSON.stringify({ version: FORMAT_VERSION, ...layout }), "utf8");
  assert(json.length < SUPERBLOCK_BYTES - 20, "superblock JSON fits");
  buf.writeUInt32BE(json.length, 8);
  json.copy(buf, 12);
  buf.writeUInt32BE(crc32(buf.subarray(0, SUPERBLOCK_BYTES - 4)), SUPERBLOCK_BYTES - 4);
  return buf;
}

/** Result of reading the first 4 KiB of a device. */
export type SuperblockRead = { kind: "formatted"; layout: PoolLayout } | { kind: "blank" } | { kind: "foreign" };

/** Decodes a superblock; "blank" for all-zero bytes, "foreign" for anything that is not ours. */
export function decodeSuperblock(buf: Buffer): SuperblockRead {
  if (buf.length < SUPERBLOCK_BYTES) return { kind: "foreign" };
  if (buf.subarray(0, SUPERBLOCK_BYTES).every((b) => b === 0)) return { kind: "blank" };
  if (buf.toString("ascii", 0, 8) !== SUPERBLOCK_MAGIC) return { kind: "foreign" };
  if (crc32(buf.subarray(0, SUPERBLOCK_BYTES - 4)) !== buf.readUInt32BE(SUPERBLOCK_BYTES - 4)) {
    throw new KeelsonError({ code: "METADATA_CORRUPT", message: "pool superblock checksum mismatch" });
  }
  const length = buf.readUInt32BE(8);
  const parsed = JSON.parse(buf.toString("utf8", 12, 12 + length)) as PoolLayout & { version: number };
  if (!FORMAT_VERSIONS_READ.includes(parsed.version)) {
    throw new KeelsonError({
      code: "METADATA_CORRUPT",
      message: `pool format version ${parsed.version} is not supported (this engine reads versions ${FORMAT_VERSIONS_READ.join(" and ")})`,
    });
  }
  const { version, ...rest } = parsed;
  const layout: PoolLayout = { ...rest, subExtent: version >= 2 && rest.subExtent === true };
  if (layout.blockSizeBytes !== BLOCK_SIZE_BYTES) {
    throw new KeelsonError({
      code: "METADATA_CORRUPT",
      message: `pool block size ${layout.blockSizeBytes} is not ${BLOCK_SIZE_BYTES}`,
    });
  }
  validateExtentSize(layout.extentSizeBytes);
  return { kind: "formatted", layout };
}

export const SUPERBLOCK_SIZE_BYTES = SUPERBLOCK_BYTES;
