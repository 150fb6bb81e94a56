import { asWireError } from "../nbd/errno.js";
import type { BlockStatusCallback, ExportCallback, NbdExport, RequestAdmission } from "../nbd/export.js";
import { Command } from "../nbd/protocol.js";
import type { QosManager } from "../qos/qos-manager.js";
import { type ActivityLogRecord, decodeActivityLog } from "../store/activity-record.js";
import { IoCounters } from "../store/io-counters.js";
import type { Pool } from "../store/pool.js";
import type { Snapshot, Volume } from "../store/volume.js";
import type { ZeroOptions } from "../store/volume-io.js";
import { LocalVolumeBackend, ReplicatedBackend, type ReplicatedIo, SnapshotBackend, type TargetBackend } from "./backends.js";
import { type BlockIo, blockStatusOf } from "./block-io.js";
import { FrontAdmission } from "./front-admission.js";
import { EpochFence, QosStage } from "./stages.js";

/** What counts a target's open handles: a volume, a snapshot or a replicated volume (delete or detach refuses while any is open). */
export interface HandleCounter {
  openHandles: number;
}

/** How a target is assembled. */
export interface VolumeTargetParts {
  name: string;
  description: string;
  readOnly: boolean;
  /** Where the I/O ends (and what the size is read from). */
  backend: TargetBackend;
  /** The first stage of the pipeline in front of `backend` (the backend itself when there is none). */
  head: BlockIo;
  handles: HandleCounter;
  /** Where its requests are counted (a volume's or snapshot's own; a replicated volume's are not exported yet). */
  counters?: IoCounters;
  /** Keeps a frontend's write-intent log (replica targets only). */
  saveActivity?: (payload: Buffer, cb: ExportCallback) => void;
  /** Orders its requests at the front with every other export's (see {@link FrontAdmission}); none: as they arrive. */
  admission?: RequestAdmission;
}

/**
 * One NBD connection's handle on a volume, a snapshot or a replicated volume:
 * the one export type the NBD layer sees. Its I/O runs through the target's
 * stages (epoch fence -> QoS -> [encryption] -> backend); it counts as an
 * open handle of what it serves until closed.
 */
export class VolumeTarget implements NbdExport {
  readonly name: string;
  readonly description: string;
  readonly readOnly: boolean;
  readonly #backend: TargetBackend;
  readonly #head: BlockIo;
  readonly #handles: HandleCounter;
  readonly #io: IoCounters;
  readonly saveActivity?: (payload: Buffer, cb: ExportCallback) => void;
  readonly admission?: RequestAdmission;
  #closed = false;

  constructor(parts: VolumeTargetParts) {
    this.name = parts.name;
    this.description = parts.description;
    this.readOnly = parts.readOnly;
    this.#backend = parts.backend;
    this.#head = parts.head;
    this.#handles = parts.handles;
    this.#io = parts.counters ?? new IoCounters();
    if (parts.saveActivity) this.saveActivity = parts.saveActivity;
    if (parts.admission) this.admission = parts.admission;
    parts.handles.openHandles++;
  }

  get sizeBytes(): number {
    return this.#backend.sizeBytes;
  }

  read(offset: number, length: number, buf: Buffer, bufOffset: number, cb: ExportCallback): void {
    this.#io.readOps++;
    this.#io.readBytes += length;
    this.#head.read(offset, length, buf, bufOffset, cb);
  }

  write(offset: number, data: Buffer, fua: boolean, cb: ExportCallback): void {
    this.#io.writeOps++;
    this.#io.writeBytes += data.length;
    this.#head.write(offset, data, fua, cb);
  }

  zero(offset: number, length: number, options: ZeroOptions, cb: ExportCallback): void {
    this.#io.zeroOps++;
    this.#head.zero(offset, length, options, cb);
  }

  flush(cb: ExportCallback): void {
    this.#io.flushOps++;
    this.#head.flush(cb);
  }

  /** Latency of a request it ran, into the volume's histogram of its kind (other commands are not timed). */
  observe(command: number, elapsedMs: number): void {
    const io = this.#io;
    const seconds = elapsedMs / 1000;
    if (command === Command.READ) io.readLatency.observe(seconds);
    else if (command === Command.WRITE) io.writeLatency.observe(seconds);
    else if (command === Command.WRITE_ZEROES || command === Command.TRIM) io.zeroLatency.observe(seconds);
    else if (command === Command.FLUSH) io.flushLatency.observe(seconds);
  }

  /** Through the stages (the epoch fence refuses a superseded handle; QoS does not throttle it) to the backend. */
  blockStatus(offset: number, length: number, maxRuns: number, cb: BlockStatusCallback): void {
    this.#io.blockStatusOps++;
    blockStatusOf(this.#head, offset, length, maxRuns, cb);
  }

  /** Releases the handle. Idempotent. */
  close(): void {
    if (this.#closed) return;
    this.#closed = true;
    this.#handles.openHandles--;
  }
}

export function describeVolume(v: Volume): string {
  return `keelson volume ${v.name} (${v.record.uid})`;
}

export function describeSnapshot(s: Snapshot): string {
  return `keelson snapshot ${s.name} (${s.record.uid}), read-only`;
}

/**
 * A volume of this pool under the attachment epoch `epoch` (0 without one):
 * epoch fence -> QoS (the volume's state, keyed by its uid; none without a
 * QosManager) -> local store. Writable unless `readOnly` (a reader's
 * frontend, an inspection of a replica): then it keeps no activity log either.
 * Its requests queue at the front (the daemon's CPU) by the same QoS state,
 * unless `front` is false: a replica's, served to a frontend that already
 * holds its place at its own node's front (or in process).
 */
export function localVolumeTarget(
  pool: Pool,
  volume: Volume,
  qos: QosManager | null,
  epoch: number,
  options: { readOnly?: boolean; front?: boolean } = {},
): VolumeTarget {
  const readOnly = options.readOnly ?? false;
  const backend = new LocalVolumeBackend(pool, volume);
  const limited: BlockIo = qos ? new QosStage(qos, volume.record.uid, volume.name, backend) : backend;
  return new VolumeTarget({
    name: volume.name,
    description: describeVolume(volume),
    readOnly,
    backend,
    head: new EpochFence(volume, epoch, limited),
    handles: volume,
    counters: volume.io,
    ...(qos && options.front !== false ? { admission: new FrontAdmission(qos, volume.record.uid) } : {}),
    // Under an epoch it is a replica of a frontend, which keeps its write-intent log here.
    ...(epoch > 0 && !readOnly
      ? { saveActivity: (payload: Buffer, cb: ExportCallback) => saveActivity(pool, volume, epoch, payload, cb) }
      : {}),
  });
}

/** Keeps the write-intent log of the frontend at `epoch` with this replica (the pool checks the epoch against its fence). */
function saveActivity(pool: Pool, volume: Volume, epoch: number, payload: Buffer, cb: ExportCallback): void {
  let log: ActivityLogRecord;
  try {
    log = decodeActivityLog(payload, epoch);
  } catch (error) {
    return cb(asWireError(error));
  }
  pool.saveActivityLog(volume.name, log).then(
    () => cb(null),
    (error: unknown) => cb(asWireError(error)),
  );
}

/**
 * A snapshot of this pool, read-only: no epoch (nothing to fence) and no limits, as it always was; with
 * `qos` its requests still queue at the front (in the share of exports without QoS state), so a flood of
 * snapshot reads cannot take the daemon from a reserved volume.
 */
export function snapshotTarget(pool: Pool, snapshot: Snapshot, qos: QosManager | null = null): VolumeTarget {
  const backend = new SnapshotBackend(pool, snapshot);
  return new VolumeTarget({
    name: snapshot.name,
    description: describeSnapshot(snapshot),
    readOnly: true,
    backend,
    head: backend,
    handles: snapshot,
    counters: snapshot.io,
    ...(qos ? { admission: new FrontAdmission(qos, `snapshot:${snapshot.name}`) } : {}),
  });
}

/**
 * The QosManager key of a replicated volume's QoS state on its frontend's
 * node: the cluster volume's name, prefixed so it never meets a local
 * volume's uid (a UUID). The policy is the volume's, wherever it is attached.
 */
export function replicatedQosKey(volumeName: string): string {
  return `replicated:${volumeName}`;
}

/**
 * A replicated volume attached on this node: QoS (the state under
 * {@link replicatedQosKey}) -> the fan-out. No epoch fence stage here: the
 * attachment's epoch travels with every replica request and each replica's
 * own target fences it, and the fan-out stops once a replica says it is stale.
 */
export function replicatedTarget(volume: ReplicatedIo, qos: QosManager | null): VolumeTarget {
  const backend = new ReplicatedBackend(volume);
  return new VolumeTarget({
    name: volume.name,
    description: `keelson replicated volume ${volume.name} (epoch ${volume.epoch})`,
    readOnly: volume.readOnly,
    backend,
    head: qos ? new QosStage(qos, replicatedQosKey(volume.name), volume.name, backend) : backend,
    handles: volume,
    counters: volume.io,
    ...(qos ? { admission: new FrontAdmission(qos, replicatedQosKey(volume.name)) } : {}),
  });
}
