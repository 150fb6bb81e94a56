import { KeelsonError } from "@keelson/sdk";
import type { ExportCatalog, ExportInfo, NbdExport, NbdPeer } from "../nbd/export.js";
import { DEFAULT_WEIGHT, type QosPolicy } from "../qos/policy.js";
import type { QosManager, VolumeQosStatus } from "../qos/qos-manager.js";
import type { Pool } from "../store/pool.js";
import { isReplicaCopy, type Volume } from "../store/volume.js";
import type { ReplicatedIo } from "./backends.js";
import {
  describeSnapshot,
  describeVolume,
  localVolumeTarget,
  replicatedQosKey,
  replicatedTarget,
  snapshotTarget,
} from "./volume-target.js";

/** `VOLUME#EPOCH` -> its parts; a name without `#` has epoch 0. Null for a malformed epoch. */
export function parseEpochName(name: string): { volume: string; epoch: number } | null {
  const at = name.lastIndexOf("#");
  if (at < 0) return { volume: name, epoch: 0 };
  const epoch = Number(name.slice(at + 1));
  return /^[0-9]{1,15}$/.test(name.slice(at + 1)) && Number.isSafeInteger(epoch) ? { volume: name.slice(0, at), epoch } : null;
}

const EMPTY_QOS_STATUS: VolumeQosStatus = {
  throttledMs: 0,
  delayedIos: 0,
  queuedIos: 0,
  servedByReservation: 0,
  servedByWeight: 0,
};

/**
 * Opens this pool's volume `VOLUME#EPOCH` as a frontend's own replica, in
 * process: the same stages a peer's frontend gets over NBD (the replica
 * side's epoch fence, the replica volume's QoS state, the local store), with
 * no lookup among the replicated volumes attached here. Null when there is no
 * such volume or it is fenced past EPOCH. This is what the engine injects
 * into replication/ as its `OpenLocalExport`.
 */
export function openLocalReplica(pool: Pool, qos: QosManager | null, exportName: string): NbdExport | null {
  const parsed = parseEpochName(exportName);
  const v = parsed ? pool.findVolume(parsed.volume) : undefined;
  if (!v || !parsed || parsed.epoch < (v.record.epoch ?? 0)) return null;
  return localVolumeTarget(pool, v, qos, parsed.epoch, { front: false });
}

/**
 * Every target an application reaches on this node, by export name: a
 * replicated volume attached here under its name, a volume of this pool
 * that is no replica under its name, a snapshot read-only under
 * `VOLUME@SNAPSHOT`. A replica is not an application's: writes reach it only
 * through its frontend. On the unix socket (its owner is root, who can read
 * the disk anyway) `VOLUME#EPOCH` opens this node's replica read-only, so
 * that an operator or a test can compare replicas. `F` is the replicated
 * volume type the engine registers in `frontends`.
 */
export class TargetCatalog<F extends ReplicatedIo = ReplicatedIo> implements ExportCatalog {
  readonly #pool: Pool;
  readonly #qos: QosManager | null;
  /** Replicated volumes attached on this node: their export name serves the frontend, not the local replica. */
  readonly frontends = new Map<string, F>();

  constructor(pool: Pool, qos: QosManager | null = null) {
    this.#pool = pool;
    this.#qos = qos;
  }

  /** What a client over TCP sees (no replica inspection). */
  list(): Array<{ name: string; description: string }> {
    return this.#list();
  }

  describe(name: string): ExportInfo | null {
    return this.#describe(name, false);
  }

  open(name: string): NbdExport | null {
    return this.#open(name, false);
  }

  /** The exports `peer` may see and open. */
  forClient(peer: NbdPeer): ExportCatalog {
    const inspect = peer.via === "unix";
    return {
      list: () => this.#list(),
      describe: (name) => this.#describe(name, inspect),
      open: (name) => this.#open(name, inspect),
    };
  }

  /** Attached replicated volumes, volumes that are no replica, and snapshots of those. */
  #list(): Array<{ name: string; description: string }> {
    const frontends = [...this.frontends.values()].map((f) => ({
      name: f.name,
      description: `keelson replicated volume ${f.name}`,
    }));
    const volumes = this.#pool
      .listVolumes()
      .filter((v) => !isReplicaCopy(v) && !this.frontends.has(v.name))
      .map((v) => ({ name: v.name, description: describeVolume(v) }));
    const local = new Set([...volumes.map((v) => v.name), ...this.frontends.keys()]);
    const snapshots = this.#pool
      .listSnapshots()
      .filter((s) => local.has(s.record.volumeName))
      .map((s) => ({ name: s.name, description: describeSnapshot(s) }));
    return [...frontends, ...volumes, ...snapshots];
  }

  #describe(name: string, inspect: boolean): ExportInfo | null {
    const frontend = this.frontends.get(name);
    if (frontend) {
      return { sizeBytes: frontend.sizeBytes, readOnly: frontend.readOnly, description: `keelson replicated volume ${name}` };
    }
    const v = this.#volume(name, inspect);
    if (v) return { sizeBytes: v.volume.sizeBytes, readOnly: v.epoch > 0, description: describeVolume(v.volume) };
    const s = this.#pool.findSnapshot(name);
    return s ? { sizeBytes: s.sizeBytes, readOnly: true, description: describeSnapshot(s) } : null;
  }

  #open(name: string, inspect: boolean): NbdExport | null {
    const frontend = this.frontends.get(name);
    if (frontend) return replicatedTarget(frontend, this.#qos);
    const v = this.#volume(name, inspect);
    if (v) return localVolumeTarget(this.#pool, v.volume, this.#qos, v.epoch, { readOnly: v.epoch > 0 });
    const s = this.#pool.findSnapshot(name);
    return s ? snapshotTarget(this.#pool, s, this.#qos) : null;
  }

  /**
   * The volume `name` names for an application: one that is no replica by its name, or (`inspect`, on the
   * unix socket) a replica as `VOLUME#EPOCH` at an epoch it is not fenced past, to be opened read-only.
   */
  #volume(name: string, inspect: boolean): { volume: Volume; epoch: number } | null {
    const parsed = parseEpochName(name);
    const v = parsed ? this.#pool.findVolume(parsed.volume) : undefined;
    if (!v || !parsed) return null;
    if (parsed.epoch === 0) return isReplicaCopy(v) ? null : { volume: v, epoch: 0 };
    if (!inspect || parsed.epoch < (v.record.epoch ?? 0)) return null;
    return { volume: v, epoch: parsed.epoch };
  }

  /**
   * Sets (or replaces, live) the QoS policy of the replicated volume
   * `volumeName` on this node: its frontend's target here is throttled by it,
   * on connections already open too. Idempotent; the volume need not be
   * attached here yet (the policy waits for it). For the control plane to
   * call where a replicated volume's policy is created, changed or loaded.
   * Limits only: a reservation or a weight is a share of one disk, and the
   * frontend's node is not where a replicated volume's I/O lands (it would
   * also put every local volume of this node through the disk scheduler);
   * those are INVALID_ARGUMENT, as is a catalog built without a QosManager.
   */
  applyQos(volumeName: string, policy: QosPolicy): void {
    if (!this.#qos) {
      throw new KeelsonError({
        code: "INVALID_ARGUMENT",
        message: `no QoS on this engine: cannot apply a policy to ${volumeName}`,
      });
    }
    if (policy.reservationIops > 0 || policy.reservationBytesPerSec > 0 || policy.weight !== DEFAULT_WEIGHT) {
      throw new KeelsonError({
        code: "INVALID_ARGUMENT",
        message: `replicated volume ${volumeName} takes QoS limits only: reservationIops ${policy.reservationIops}, reservationBytesPerSec ${policy.reservationBytesPerSec} and weight ${policy.weight} must be 0, 0 and ${DEFAULT_WEIGHT}`,
      });
    }
    this.#qos.applyLimits(replicatedQosKey(volumeName), policy);
  }

  /** What the QoS of the replicated volume `volumeName` did on this node (zeros when it has no state here). */
  qosStatus(volumeName: string): VolumeQosStatus {
    return this.#qos?.status(replicatedQosKey(volumeName)) ?? EMPTY_QOS_STATUS;
  }

  /** Forgets the QoS state of the replicated volume `volumeName` (deleted); I/O still waiting on it runs. Idempotent. */
  removeQos(volumeName: string): void {
    this.#qos?.remove(replicatedQosKey(volumeName));
  }
}
