import { randomUUID } from "node:crypto";
import { KeelsonError } from "@keelson/sdk";
import { type ActivityLogRecord, supersedes } from "./activity-record.js";
import { absentQosPolicy, type QosPolicyRecord, type VolumeRecord, type VolumeSource } from "./catalog.js";
import type { Layer } from "./layer.js";
import { collect } from "./layer-gc.js";
import type { PoolCore } from "./pool-core.js";
import { checkProvisioning } from "./provisioning.js";
import { type Reservations, reservationOf, sumReservations } from "./reservations.js";
import { checkDepth, sealHead } from "./snapshot-ops.js";
import {
  MAX_VOLUMES,
  sameLabels,
  validateLabels,
  validateReplicas,
  validateSizeBytes,
  validateVolumeName,
} from "./validation.js";
import { Volume } from "./volume.js";

// Volume create (empty or clone), delete, resize, fence and QoS changes.
// Each function runs under the pool's control lock (Pool serializes them).

/** What a clone is made from. */
export type CloneSource = { snapshot: { volumeName: string; name: string } } | { volumeName: string };

/** Request of `Pool.createVolume`. */
export interface CreateVolumeOptions {
  name: string;
  /** Required for an empty volume; for a clone, 0 or absent means the source's size, and smaller fails. */
  sizeBytes?: number;
  labels?: Record<string, string>;
  replicas?: number;
  /** Makes the volume a clone sharing the source's data. */
  source?: CloneSource;
  /** Limits, reservation and weight (validated by the caller); the reservation is admitted against the disk. */
  qos?: QosPolicyRecord;
  /** The QoS class `qos` came from. */
  qosClass?: string;
}

/** A resolved clone source: its record and, when the clone is created, the layer the clone reads through. */
interface ResolvedSource {
  record: VolumeSource;
  sizeBytes: number;
  /** Runs `use` with the layer the clone reads through (for a live volume, while its head is sealed). */
  withBase: <T>(use: (base: Layer) => Promise<T>) => Promise<T>;
}

function resolveSource(core: PoolCore, source: CloneSource): ResolvedSource {
  if ("snapshot" in source) {
    const snap = core.getSnapshot(source.snapshot.volumeName, source.snapshot.name);
    const r = snap.record;
    checkDepth(snap.chain.length + 1, `clone of ${snap.name}`);
    return {
      record: { kind: "snapshot", volumeName: r.volumeName, snapshotName: r.name, snapshotUid: r.uid },
      sizeBytes: r.sizeBytes,
      withBase: (use) => use(snap.layer),
    };
  }
  const vol = core.getVolume(source.volumeName);
  checkDepth(vol.chain.length + 1, `clone of volume ${vol.name}`);
  return {
    record: { kind: "volume", volumeName: vol.name, volumeUid: vol.record.uid },
    sizeBytes: vol.sizeBytes,
    // An implicit snapshot: the volume's head is sealed as a hidden layer that both read through.
    withBase: (use) => sealHead(core, vol, use),
  };
}

function cloneSize(requested: number | undefined, sourceSize: number | undefined): number {
  if (sourceSize === undefined || (requested !== undefined && requested !== 0)) {
    const size = validateSizeBytes(requested);
    if (sourceSize !== undefined && size < sourceSize) {
      throw new KeelsonError({
        code: "INVALID_ARGUMENT",
        message: `a clone must be at least its source's size ${sourceSize} bytes; requested ${size}`,
      });
    }
    return size;
  }
  return sourceSize;
}

/** The fields an idempotent create compares, validated. */
interface VolumeRequest {
  sizeBytes: number;
  labels: Record<string, string>;
  replicas: number;
  source: VolumeSource | undefined;
  options: CreateVolumeOptions;
}

/** An existing volume asked for again: itself when the request matches, else ALREADY_EXISTS. */
function sameVolume(v: Volume, { sizeBytes, labels, replicas, source, options }: VolumeRequest): Volume {
  const same =
    v.sizeBytes === sizeBytes &&
    v.record.replicas === replicas &&
    sameLabels(v.record.labels, labels) &&
    JSON.stringify(v.record.source ?? null) === JSON.stringify(source ?? null) &&
    (v.record.qosClass ?? "") === (options.qosClass ?? "") &&
    JSON.stringify(v.record.qos ?? absentQosPolicy()) === JSON.stringify(options.qos ?? absentQosPolicy());
  if (same) return v;
  throw new KeelsonError({
    code: "ALREADY_EXISTS",
    message: `volume ${v.name} exists with sizeBytes ${v.sizeBytes}, replicas ${v.record.replicas}, labels ${JSON.stringify(v.record.labels)} and source ${JSON.stringify(v.record.source ?? null)}; requested sizeBytes ${sizeBytes}, replicas ${replicas}, labels ${JSON.stringify(labels)}, source ${JSON.stringify(source ?? null)}`,
  });
}

/** The reservations admitted on the pool's disk, leaving out the volume `exceptUid`. */
export function reservedOn(core: PoolCore, exceptUid?: string): Reservations {
  return sumReservations(
    [...core.volumes.values()].map((v) => v.record),
    exceptUid,
  );
}

/** See `Pool.createVolume`. */
export async function createVolume(core: PoolCore, options: CreateVolumeOptions): Promise<Volume> {
  const name = validateVolumeName(options.name);
  const labels = validateLabels(options.labels ?? {});
  const replicas = validateReplicas(options.replicas);
  const source = options.source ? resolveSource(core, options.source) : null;
  const sizeBytes = cloneSize(options.sizeBytes, source?.sizeBytes);
  const existing = core.volumes.get(name);
  if (existing) return sameVolume(existing, { sizeBytes, labels, replicas, source: source?.record, options });
  if (core.volumes.size >= MAX_VOLUMES) {
    throw new KeelsonError({ code: "LIMIT_EXCEEDED", message: `pool holds its maximum of ${MAX_VOLUMES} volumes` });
  }
  checkProvisioning(core, sizeBytes, `volume ${name}`);
  const uid = randomUUID();
  core.admit({ diskPath: core.device.path, disk: core.disk, reserved: reservedOn(core), wanted: reservationOf(options.qos) });
  const create = async (parent: Layer | null): Promise<Volume> => {
    const head = core.newLayer(parent, uid);
    const record: VolumeRecord = { uid, name, sizeBytes, createdAtMs: Date.now(), labels, replicas, headLayerId: head.id };
    if (source) record.source = source.record;
    if (options.qos) record.qos = options.qos;
    if (options.qosClass) record.qosClass = options.qosClass;
    const volume = new Volume(record, core.chainOf(head.id));
    core.volumes.set(name, volume);
    core.record({ op: "putVolume", volume: record });
    await core.flush();
    return volume;
  };
  return source ? source.withBase(create) : create(null);
}

/** See `Pool.deleteVolume`. */
export async function deleteVolume(core: PoolCore, name: string): Promise<number> {
  const volume = core.getVolume(name);
  if (volume.openHandles > 0) {
    throw new KeelsonError({
      code: "VOLUME_IN_USE",
      message: `volume ${name} has ${volume.openHandles} open connection(s); disconnect them or delete with force`,
    });
  }
  const free0 = core.releasedBytes;
  volume.deleted = true;
  core.volumes.delete(name);
  core.record({ op: "deleteVolume", uid: volume.record.uid });
  const parent = core.unlinkLeaf(volume.head);
  core.relink();
  await core.flush();
  await collect(core, parent);
  await core.flush();
  return core.releasedBytes - free0;
}

/** Replaces a volume's record with `record` and commits it. */
async function putVolume(core: PoolCore, volume: Volume, record: VolumeRecord): Promise<Volume> {
  volume.record = record;
  core.record({ op: "putVolume", volume: record });
  await core.flush();
  return volume;
}

/** See `Pool.fenceVolume`. */
export async function fenceVolume(core: PoolCore, name: string, epoch: number): Promise<Volume> {
  const volume = core.getVolume(name);
  if (!Number.isSafeInteger(epoch) || epoch < 1) {
    throw new KeelsonError({ code: "INVALID_ARGUMENT", message: `invalid epoch ${epoch}: a positive integer` });
  }
  const current = volume.record.epoch ?? 0;
  if (epoch < current) {
    throw new KeelsonError({
      code: "EPOCH_STALE",
      message: `volume ${name} is fenced at epoch ${current}; epoch ${epoch} is stale`,
    });
  }
  if (epoch === current) return volume;
  return putVolume(core, volume, { ...volume.record, epoch });
}

/** See `Pool.saveActivityLog`. */
export async function saveActivityLog(core: PoolCore, name: string, log: ActivityLogRecord): Promise<Volume> {
  const volume = core.getVolume(name);
  const fenced = volume.record.epoch ?? 0;
  if (log.epoch < fenced) {
    throw new KeelsonError({
      code: "EPOCH_STALE",
      message: `volume ${name} is fenced at epoch ${fenced}; an activity log of epoch ${log.epoch} is stale`,
    });
  }
  // Only the frontend that fenced this replica keeps a log here: one under an epoch nobody fenced
  // would outrank every later frontend's saves.
  if (log.epoch > fenced) {
    throw new KeelsonError({
      code: "INVALID_ARGUMENT",
      message: `volume ${name} is fenced at epoch ${fenced}: an activity log of epoch ${log.epoch} needs a fence at that epoch first`,
    });
  }
  // A save that lost a race with a newer one of its own frontend (its connection timed out and a
  // new one saved since): taking it would put an older log over the newer one.
  if (!supersedes(log, volume.record.activity)) {
    const current = volume.record.activity as ActivityLogRecord;
    throw new KeelsonError({
      code: "INVALID_ARGUMENT",
      message: `volume ${name}: activity log save ${log.epoch}/${log.sequence} is older than the one kept (${current.epoch}/${current.sequence})`,
    });
  }
  // Kept in memory at once (what the next frontend reads from this live replica) and committed
  // within a second, not before the answer: a commit now would wait for every dirty page of the
  // pool, and a frontend writing to a new extent waits for this save. On disk it is as durable as
  // the data it covers, which the frontend's next FLUSH makes durable with it.
  volume.record = { ...volume.record, activity: log };
  core.record({ op: "putVolume", volume: volume.record });
  core.commitSoon();
  return volume;
}

/** See `Pool.setVolumeQos`. */
export async function setVolumeQos(
  core: PoolCore,
  name: string,
  qos: QosPolicyRecord,
  qosClass: string | undefined,
): Promise<Volume> {
  const volume = core.getVolume(name);
  const reserved = reservedOn(core, volume.record.uid);
  core.admit({ diskPath: core.device.path, disk: core.disk, reserved, wanted: reservationOf(qos) });
  const { qos: _q, qosClass: _c, ...rest } = volume.record;
  return putVolume(core, volume, { ...rest, qos, ...(qosClass ? { qosClass } : {}) });
}

/** See `Pool.resizeVolume`. */
export async function resizeVolume(core: PoolCore, name: string, sizeBytesIn: number): Promise<Volume> {
  const volume = core.getVolume(name);
  const sizeBytes = validateSizeBytes(sizeBytesIn);
  if (sizeBytes < volume.sizeBytes) {
    throw new KeelsonError({
      code: "SHRINK_NOT_SUPPORTED",
      message: `volume ${name} is ${volume.sizeBytes} bytes; shrinking to ${sizeBytes} is not supported`,
    });
  }
  if (sizeBytes === volume.sizeBytes) return volume;
  checkProvisioning(core, sizeBytes - volume.sizeBytes, `growing volume ${name} to ${sizeBytes} bytes`);
  return putVolume(core, volume, { ...volume.record, sizeBytes });
}
