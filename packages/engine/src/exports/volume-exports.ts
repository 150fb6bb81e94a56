import { KeelsonError } from "@keelson/sdk";
import type { ExportCallback, ExportCatalog, NbdExport } from "../nbd/export.js";
import type { QosManager, VolumeQos } from "../qos/qos-manager.js";
import { FrontendExport, type ReplicatedVolume } from "../replication/frontend.js";
import type { Pool } from "../store/pool.js";
import type { Snapshot, Volume } from "../store/volume.js";
import { flushVolume, readVolume, writeVolume, zeroVolume } from "../store/volume-io.js";
import { ReadIo, throttleQueueFull, WriteIo, ZeroIo } from "./qos-io.js";

function describeVolume(v: Volume): string {
  return `keelson volume ${v.name} (${v.record.uid})`;
}

/**
 * One NBD connection's handle on a volume or a snapshot: it counts as an
 * open handle of its target (delete refuses while any is open) until closed.
 */
abstract class ChainExport<T extends Volume | Snapshot> implements NbdExport {
  protected readonly pool: Pool;
  protected readonly target: T;
  readonly description: string;
  abstract readonly readOnly: boolean;
  #closed = false;

  constructor(pool: Pool, target: T, description: string) {
    this.pool = pool;
    this.target = target;
    this.description = description;
    target.openHandles++;
  }

  get name(): string {
    return this.target.name;
  }

  get sizeBytes(): number {
    return this.target.sizeBytes;
  }

  read(offset: number, length: number, buf: Buffer, bufOffset: number, cb: ExportCallback): void {
    readVolume(this.pool, this.target, offset, length, buf, bufOffset, cb);
  }

  abstract write(offset: number, data: Buffer, fua: boolean, cb: ExportCallback): void;
  abstract zero(offset: number, length: number, options: ZeroRequest, cb: ExportCallback): void;
  abstract flush(cb: ExportCallback): void;

  close(): void {
    if (this.#closed) return;
    this.#closed = true;
    this.target.openHandles--;
  }
}

type ZeroRequest = { trim: boolean; noHole: boolean; fua: boolean };

/** The error of I/O under an attachment epoch older than the volume's fence. */
function staleEpoch(volume: Volume, epoch: number): KeelsonError {
  return new KeelsonError({
    code: "EPOCH_STALE",
    message: `volume ${volume.name} is fenced at epoch ${volume.record.epoch ?? 0}; this connection holds epoch ${epoch}`,
  });
}

/**
 * A writable handle on a volume; its I/O goes through the volume's QoS unless
 * QoS has nothing to do. It carries the attachment epoch it was opened under
 * (export name `VOLUME#EPOCH`, 0 without one) and serves nothing once the
 * volume is fenced at a newer epoch.
 */
class VolumeExport extends ChainExport<Volume> {
  readonly readOnly = false;
  readonly #qos: QosManager | null;
  /** The volume's QoS state, looked up once; a policy change updates this same object. */
  readonly #volumeQos: VolumeQos | undefined;
  readonly #epoch: number;

  constructor(pool: Pool, volume: Volume, qos: QosManager | null, epoch: number) {
    super(pool, volume, describeVolume(volume));
    this.#qos = qos;
    this.#volumeQos = qos?.get(volume.record.uid);
    this.#epoch = epoch;
  }

  /** False (and the callback gets EPOCH_STALE) when the volume was fenced past this handle's epoch. */
  #current(cb: ExportCallback): boolean {
    if (this.#epoch >= (this.target.record.epoch ?? 0)) return true;
    cb(staleEpoch(this.target, this.#epoch));
    return false;
  }

  /** The volume's QoS state, or null when its I/O may go straight to the store. */
  #limited(): VolumeQos | null {
    const q = this.#volumeQos;
    return q === undefined || this.#qos === null || this.#qos.passThrough(q) ? null : q;
  }

  override read(offset: number, length: number, buf: Buffer, bufOffset: number, cb: ExportCallback): void {
    if (!this.#current(cb)) return;
    const q = this.#limited();
    if (q === null) return readVolume(this.pool, this.target, offset, length, buf, bufOffset, cb);
    const io = new ReadIo(this.pool, this.target, offset, length, buf, bufOffset, cb);
    if (!this.#qos?.submit(q, io)) cb(throttleQueueFull(this.target));
  }

  write(offset: number, data: Buffer, fua: boolean, cb: ExportCallback): void {
    if (!this.#current(cb)) return;
    const q = this.#limited();
    if (q === null) return writeVolume(this.pool, this.target, offset, data, fua, cb);
    if (!this.#qos?.submit(q, new WriteIo(this.pool, this.target, offset, data, fua, cb))) cb(throttleQueueFull(this.target));
  }

  zero(offset: number, length: number, options: ZeroRequest, cb: ExportCallback): void {
    if (!this.#current(cb)) return;
    const q = this.#limited();
    if (q === null) return zeroVolume(this.pool, this.target, offset, length, options, cb);
    if (!this.#qos?.submit(q, new ZeroIo(this.pool, this.target, offset, length, options, cb))) {
      cb(throttleQueueFull(this.target));
    }
  }

  flush(cb: ExportCallback): void {
    if (!this.#current(cb)) return;
    flushVolume(this.pool, cb);
  }
}

/** `VOLUME#EPOCH` -> its parts; a name without `#` has epoch 0. Null for a malformed epoch. */
function parseEpochName(name: string): { volume: string; epoch: number } | null {
  const at = name.lastIndexOf("#");
  if (at < 0) return { volume: name, epoch: 0 };
  const epoch = Number(name.slice(at + 1));
  return /^[0-9]{1,15}$/.test(name.slice(at + 1)) && Number.isSafeInteger(epoch) ? { volume: name.slice(0, at), epoch } : null;
}

function describeSnapshot(s: Snapshot): string {
  return `keelson snapshot ${s.name} (${s.record.uid}), read-only`;
}

/** A read-only handle on a snapshot (export name `VOLUME@SNAPSHOT`); writes fail with READ_ONLY (EPERM). */
class SnapshotExport extends ChainExport<Snapshot> {
  readonly readOnly = true;

  constructor(pool: Pool, snapshot: Snapshot) {
    super(pool, snapshot, describeSnapshot(snapshot));
  }

  write(_offset: number, _data: Buffer, _fua: boolean, cb: ExportCallback): void {
    cb(readOnly(this.target));
  }

  zero(_offset: number, _length: number, _options: ZeroRequest, cb: ExportCallback): void {
    cb(readOnly(this.target));
  }

  flush(cb: ExportCallback): void {
    cb(null);
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
  readonly #qos: QosManager | null;
  /** Replicated volumes attached on this node: their export name serves the frontend, not the local replica. */
  readonly frontends = new Map<string, ReplicatedVolume>();

  constructor(pool: Pool, qos: QosManager | null = null) {
    this.#pool = pool;
    this.#qos = qos;
  }

  list(): Array<{ name: string; description: string }> {
    const volumes = this.#pool.listVolumes().map((v) => ({ name: v.name, description: describeVolume(v) }));
    const snapshots = this.#pool.listSnapshots().map((s) => ({ name: s.name, description: describeSnapshot(s) }));
    return [...volumes, ...snapshots];
  }

  describe(name: string): { sizeBytes: number; readOnly: boolean; description: string } | null {
    const frontend = this.frontends.get(name);
    if (frontend) {
      return { sizeBytes: frontend.sizeBytes, readOnly: frontend.readOnly, description: `keelson replicated volume ${name}` };
    }
    const parsed = parseEpochName(name);
    const v = parsed ? this.#pool.findVolume(parsed.volume) : undefined;
    if (v) return { sizeBytes: v.sizeBytes, readOnly: false, description: describeVolume(v) };
    const s = this.#pool.findSnapshot(name);
    return s ? { sizeBytes: s.sizeBytes, readOnly: true, description: describeSnapshot(s) } : null;
  }

  /** Opens `VOLUME`, `VOLUME#EPOCH` (refused once the volume is fenced past EPOCH) or `VOLUME@SNAPSHOT`. */
  open(name: string): NbdExport | null {
    const frontend = this.frontends.get(name);
    if (frontend) return new FrontendExport(frontend);
    const parsed = parseEpochName(name);
    const v = parsed ? this.#pool.findVolume(parsed.volume) : undefined;
    if (v && parsed) {
      if (parsed.epoch < (v.record.epoch ?? 0)) return null;
      return new VolumeExport(this.#pool, v, this.#qos, parsed.epoch);
    }
    const s = this.#pool.findSnapshot(name);
    return s ? new SnapshotExport(this.#pool, s) : null;
  }
}
