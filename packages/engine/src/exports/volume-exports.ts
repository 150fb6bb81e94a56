import { KeelsonError } from "@keelson/sdk";
import type { ExportCallback, ExportCatalog, NbdExport } from "../nbd/export.js";
import type { Pool } from "../store/pool.js";
import type { Snapshot, Volume } from "../store/volume.js";
import { flushVolume, readVolume, writeVolume, zeroVolume } from "../store/volume-io.js";

function describeVolume(v: Volume): string {
  return `keelson volume ${v.name} (${v.record.uid})`;
}

/** One NBD connection's handle on a volume; counts as an open handle until closed. */
class VolumeExport implements NbdExport {
  readonly #pool: Pool;
  readonly #volume: Volume;
  readonly description: string;
  readonly readOnly = false;
  #closed = false;

  constructor(pool: Pool, volume: Volume) {
    this.#pool = pool;
    this.#volume = volume;
    this.description = describeVolume(volume);
    volume.openHandles++;
  }

  get name(): string {
    return this.#volume.name;
  }

  get sizeBytes(): number {
    return this.#volume.sizeBytes;
  }

  read(offset: number, length: number, buf: Buffer, bufOffset: number, cb: ExportCallback): void {
    readVolume(this.#pool, this.#volume, offset, length, buf, bufOffset, cb);
  }

  write(offset: number, data: Buffer, fua: boolean, cb: ExportCallback): void {
    writeVolume(this.#pool, this.#volume, offset, data, fua, cb);
  }

  zero(offset: number, length: number, options: { trim: boolean; noHole: boolean; fua: boolean }, cb: ExportCallback): void {
    zeroVolume(this.#pool, this.#volume, offset, length, options, cb);
  }

  flush(cb: ExportCallback): void {
    flushVolume(this.#pool, cb);
  }

  close(): void {
    if (this.#closed) return;
    this.#closed = true;
    this.#volume.openHandles--;
  }
}

function describeSnapshot(s: Snapshot): string {
  return `keelson snapshot ${s.name} (${s.record.uid}), read-only`;
}

/** A read-only handle on a snapshot (export name `VOLUME@SNAPSHOT`). */
class SnapshotExport implements NbdExport {
  readonly #pool: Pool;
  readonly #snapshot: Snapshot;
  readonly description: string;
  readonly readOnly = true;
  #closed = false;

  constructor(pool: Pool, snapshot: Snapshot) {
    this.#pool = pool;
    this.#snapshot = snapshot;
    this.description = describeSnapshot(snapshot);
    snapshot.openHandles++;
  }

  get name(): string {
    return this.#snapshot.name;
  }

  get sizeBytes(): number {
    return this.#snapshot.sizeBytes;
  }

  read(offset: number, length: number, buf: Buffer, bufOffset: number, cb: ExportCallback): void {
    readVolume(this.#pool, this.#snapshot, offset, length, buf, bufOffset, cb);
  }

  write(_offset: number, _data: Buffer, _fua: boolean, cb: ExportCallback): void {
    cb(readOnly(this.#snapshot));
  }

  zero(_offset: number, _length: number, _options: { trim: boolean; noHole: boolean; fua: boolean }, cb: ExportCallback): void {
    cb(readOnly(this.#snapshot));
  }

  flush(cb: ExportCallback): void {
    cb(null);
  }

  close(): void {
    if (this.#closed) return;
    this.#closed = true;
    this.#snapshot.openHandles--;
  }
}

function readOnly(s: Snapshot): KeelsonError {
  return new KeelsonError({ code: "READ_ONLY", message: `snapshot ${s.name} is read-only; clone it to write` });
}

/**
 * The pool's volumes and snapshots as NBD exports: a volume under its name,
 * a snapshot read-only under `VOLUME@SNAPSHOT`.
 */
export class VolumeExportCatalog implements ExportCatalog {
  readonly #pool: Pool;

  constructor(pool: Pool) {
    this.#pool = pool;
  }

  list(): Array<{ name: string; description: string }> {
    const volumes = this.#pool.listVolumes().map((v) => ({ name: v.name, description: describeVolume(v) }));
    const snapshots = this.#pool.listSnapshots().map((s) => ({ name: s.name, description: describeSnapshot(s) }));
    return [...volumes, ...snapshots];
  }

  describe(name: string): { sizeBytes: number; readOnly: boolean; description: string } | null {
    const v = this.#pool.findVolume(name);
    if (v) return { sizeBytes: v.sizeBytes, readOnly: false, description: describeVolume(v) };
    const s = this.#pool.findSnapshot(name);
    return s ? { sizeBytes: s.sizeBytes, readOnly: true, description: describeSnapshot(s) } : null;
  }

  open(name: string): NbdExport | null {
    const v = this.#pool.findVolume(name);
    if (v) return new VolumeExport(this.#pool, v);
    const s = this.#pool.findSnapshot(name);
    return s ? new SnapshotExport(this.#pool, s) : null;
  }
}
