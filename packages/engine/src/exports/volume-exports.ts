import type { ExportCallback, ExportCatalog, NbdExport } from "../nbd/export.js";
import type { Pool } from "../store/pool.js";
import type { Volume } from "../store/volume.js";
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

/** The pool's volumes as NBD exports, each under its own name. */
export class VolumeExportCatalog implements ExportCatalog {
  readonly #pool: Pool;

  constructor(pool: Pool) {
    this.#pool = pool;
  }

  list(): Array<{ name: string; description: string }> {
    return this.#pool.listVolumes().map((v) => ({ name: v.name, description: describeVolume(v) }));
  }

  describe(name: string): { sizeBytes: number; readOnly: boolean; description: string } | null {
    const v = this.#pool.findVolume(name);
    return v ? { sizeBytes: v.sizeBytes, readOnly: false, description: describeVolume(v) } : null;
  }

  open(name: string): NbdExport | null {
    const v = this.#pool.findVolume(name);
    return v ? new VolumeExport(this.#pool, v) : null;
  }
}
