// Self-describing payloads. Every 512-byte sector of a written unit carries a
// header naming the stream, the unit, its version and the sector's place in
// the unit, followed by a fill derived from those: a read-back tells exactly
// which write it holds, a unit mixing two writes shows as torn, and a write
// that landed at the wrong offset names the unit it was meant for.

import assert from "node:assert/strict";

/** The smallest unit a stamp describes; every storage target writes at least this atomically per sector. */
export const SECTOR_BYTES = 512;
/** "KSNP", little-endian, at the start of every stamped sector. */
const MAGIC = 0x504e534b;
/** Header: magic, stream, unit, version (u32 each), sector index and sectors per unit (u16 each), header check (u32). */
const HEADER_BYTES = 24;

/** Which write a unit holds. Version 0 is the first fill; a check decides what later versions mean. */
export interface Stamp {
  /** Separates the writes of different checks, volumes or phases ("A", "B", "C" as numbers). */
  stream: number;
  /** The unit's index in its region: a sector of unit 5 found at unit 9 is a misdirected write. */
  unit: number;
  version: number;
}

/** What a unit read back holds. */
export type UnitContent =
  | { kind: "stamp"; stamp: Stamp }
  | { kind: "zeros" }
  /** Sectors from more than one write, or some unrecognisable: `detail` lists them. */
  | { kind: "torn"; detail: string };

function fmix32(h: number): number {
  h ^= h >>> 16;
  h = Math.imul(h, 0x85ebca6b);
  h ^= h >>> 13;
  h = Math.imul(h, 0xc2b2ae35);
  h ^= h >>> 16;
  return h >>> 0;
}

function seedOf(stamp: Stamp, sector: number): number {
  return fmix32(stamp.stream ^ fmix32(stamp.unit ^ fmix32(stamp.version ^ fmix32(sector + 0x9e3779b9))));
}

function writeSector(buf: Buffer, at: number, stamp: Stamp, sector: number, sectors: number): void {
  buf.writeUInt32LE(MAGIC, at);
  buf.writeUInt32LE(stamp.stream >>> 0, at + 4);
  buf.writeUInt32LE(stamp.unit >>> 0, at + 8);
  buf.writeUInt32LE(stamp.version >>> 0, at + 12);
  buf.writeUInt16LE(sector, at + 16);
  buf.writeUInt16LE(sectors, at + 18);
  const seed = seedOf(stamp, sector);
  buf.writeUInt32LE(seed, at + 20);
  for (let o = HEADER_BYTES; o < SECTOR_BYTES; o += 4) buf.writeUInt32LE(fmix32(seed + o), at + o);
}

/** A unit of `unitBytes` (a multiple of {@link SECTOR_BYTES}) holding `stamp`. */
export function makeUnit(stamp: Stamp, unitBytes: number): Buffer {
  assert.ok(unitBytes > 0 && unitBytes % SECTOR_BYTES === 0, `unit of ${unitBytes} bytes is not whole sectors`);
  const sectors = unitBytes / SECTOR_BYTES;
  assert.ok(sectors <= 0xffff, `unit of ${unitBytes} bytes has too many sectors`);
  const buf = Buffer.allocUnsafe(unitBytes);
  for (let s = 0; s < sectors; s++) writeSector(buf, s * SECTOR_BYTES, stamp, s, sectors);
  return buf;
}

/** One sector's content: a stamp with its place, zeros, or something else. */
type SectorContent = { kind: "stamp"; stamp: Stamp; sector: number; sectors: number } | { kind: "zeros" } | { kind: "garbage" };

function readSector(buf: Buffer, at: number): SectorContent {
  if (buf.readUInt32LE(at) !== MAGIC) {
    for (let o = 0; o < SECTOR_BYTES; o += 4) if (buf.readUInt32LE(at + o) !== 0) return { kind: "garbage" };
    return { kind: "zeros" };
  }
  const stamp = { stream: buf.readUInt32LE(at + 4), unit: buf.readUInt32LE(at + 8), version: buf.readUInt32LE(at + 12) };
  const sector = buf.readUInt16LE(at + 16);
  const sectors = buf.readUInt16LE(at + 18);
  const seed = seedOf(stamp, sector);
  if (buf.readUInt32LE(at + 20) !== seed) return { kind: "garbage" };
  for (let o = HEADER_BYTES; o < SECTOR_BYTES; o += 4)
    if (buf.readUInt32LE(at + o) !== fmix32(seed + o)) return { kind: "garbage" };
  return { kind: "stamp", stamp, sector, sectors };
}

/** What a run of sectors holds; a stamped sector out of its place says where it belongs. */
function sectorLabel(c: SectorContent, place: number): string {
  if (c.kind !== "stamp") return c.kind;
  return c.sector === place ? formatStamp(c.stamp) : `${formatStamp(c.stamp)} sector ${c.sector} (misplaced)`;
}

/**
 * Reads the unit of `unitBytes` at `buf[at]`. A unit is a stamp only when every
 * sector holds the same stamp in its own place; it is torn otherwise.
 */
export function decodeUnit(buf: Buffer, at: number, unitBytes: number): UnitContent {
  assert.ok(at + unitBytes <= buf.length, `unit at ${at} of ${unitBytes} bytes is past the buffer's ${buf.length}`);
  const sectors = unitBytes / SECTOR_BYTES;
  const first = readSector(buf, at);
  let whole = first.kind !== "garbage" && (first.kind === "zeros" || (first.sector === 0 && first.sectors === sectors));
  const runs: { from: number; to: number; label: string }[] = [{ from: 0, to: 0, label: sectorLabel(first, 0) }];
  for (let s = 1; s < sectors; s++) {
    const c = readSector(buf, at + s * SECTOR_BYTES);
    const same =
      first.kind === c.kind &&
      (c.kind !== "stamp" ||
        (first.kind === "stamp" && sameStamp(first.stamp, c.stamp) && c.sector === s && c.sectors === sectors));
    if (!same) whole = false;
    const label = sectorLabel(c, s);
    const last = runs[runs.length - 1]!;
    if (last.label === label) last.to = s;
    else runs.push({ from: s, to: s, label });
  }
  if (whole && first.kind === "zeros") return { kind: "zeros" };
  if (whole && first.kind === "stamp") return { kind: "stamp", stamp: first.stamp };
  const detail = runs
    .slice(0, 6)
    .map((r) => `sectors ${r.from}-${r.to}: ${r.label}`)
    .join("; ");
  return { kind: "torn", detail: runs.length > 6 ? `${detail}; ... (${runs.length} runs)` : detail };
}

export function sameStamp(a: Stamp, b: Stamp): boolean {
  return a.stream === b.stream && a.unit === b.unit && a.version === b.version;
}

export function formatStamp(s: Stamp): string {
  return `stream ${s.stream} unit ${s.unit} v${s.version}`;
}

/** A sentence for a report: "zeros", "stream 1 unit 4 v7", "torn (sectors 0-15: ...)". */
export function formatContent(c: UnitContent): string {
  if (c.kind === "stamp") return formatStamp(c.stamp);
  if (c.kind === "zeros") return "zeros";
  return `torn (${c.detail})`;
}
