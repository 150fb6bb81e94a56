import { KeelsonError } from "@keelson/sdk";
import type { CatalogFor, ExportCatalog, ExportInfo, NbdExport, NbdPeer } from "../nbd/export.js";
import type { QosManager } from "../qos/qos-manager.js";
import type { Pool } from "../store/pool.js";
import type { Snapshot, Volume } from "../store/volume.js";
import { parseEpochName } from "./catalog.js";
import { describeSnapshot, describeVolume, localVolumeTarget, snapshotTarget } from "./volume-target.js";

/** What a peer may do with a replica at an epoch: write (the epoch's holder) or read (another node of the cluster). */
export type ReplicaGrant = "write" | "read";

/** Decides from the cluster (never from what the client says) what a peer may open here. */
export interface ReplicaAuthority {
  /**
   * What `peer` may do with the replica of `volume`, fenced at `fencedAt`, opened at `epoch`; a typed
   * refusal (EPOCH_STALE, PERMISSION_DENIED, UNAVAILABLE) otherwise.
   */
  grant(volume: string, epoch: number, fencedAt: number, peer: NbdPeer): Promise<ReplicaGrant>;
  /** Resolves when `peer` is an engine of the cluster (who may read a snapshot to copy it); a typed refusal otherwise. */
  isNode(peer: NbdPeer): Promise<void>;
}

function unknownExport(name: string): KeelsonError {
  return new KeelsonError({
    code: "INVALID_ARGUMENT",
    message: `replica exports are named VOLUME#EPOCH (or VOLUME@SNAPSHOT): ${JSON.stringify(name)} is neither`,
  });
}

/**
 * The replica protocol's exports (the storage address's NBD listener): a
 * replica of this pool as `VOLUME#EPOCH`, opened for a peer engine's frontend
 * as the {@link ReplicaAuthority} grants, at an epoch the replica is not
 * fenced past; a snapshot `VOLUME@SNAPSHOT`, read-only, for an engine that
 * copies it to a rebuilt replica. Lists nothing: a peer knows what it opens
 * from the cluster.
 */
export class ReplicaCatalog {
  readonly #pool: Pool;
  readonly #qos: QosManager | null;
  readonly #authority: ReplicaAuthority;

  constructor(pool: Pool, qos: QosManager | null, authority: ReplicaAuthority) {
    this.#pool = pool;
    this.#qos = qos;
    this.#authority = authority;
  }

  /** The catalog one peer sees. */
  readonly forClient: CatalogFor = (peer) => {
    const catalog: ExportCatalog = {
      list: () => [],
      describe: async (name): Promise<ExportInfo | null> => {
        if (name.includes("@")) {
          const snapshot = await this.#snapshot(name, peer);
          return snapshot && { sizeBytes: snapshot.sizeBytes, readOnly: true, description: describeSnapshot(snapshot) };
        }
        const found = await this.#grant(name, peer);
        if (!found) return null;
        const { volume, grant } = found;
        return { sizeBytes: volume.sizeBytes, readOnly: grant === "read", description: describeVolume(volume) };
      },
      open: async (name): Promise<NbdExport | null> => {
        if (name.includes("@")) {
          const snapshot = await this.#snapshot(name, peer);
          return snapshot && snapshotTarget(this.#pool, snapshot);
        }
        const found = await this.#grant(name, peer);
        if (!found) return null;
        // No place at this node's front: a frontend's request holds one at its own node while it waits on this
        // replica, so replica requests queueing here behind that node's replica requests could wait on each other.
        return localVolumeTarget(this.#pool, found.volume, this.#qos, found.epoch, {
          readOnly: found.grant === "read",
          front: false,
        });
      },
    };
    return catalog;
  };

  async #snapshot(name: string, peer: NbdPeer): Promise<Snapshot | null> {
    await this.#authority.isNode(peer);
    return this.#pool.findSnapshot(name) ?? null;
  }

  async #grant(name: string, peer: NbdPeer): Promise<{ volume: Volume; epoch: number; grant: ReplicaGrant } | null> {
    const parsed = parseEpochName(name);
    if (!parsed || parsed.epoch === 0) throw unknownExport(name);
    const before = this.#pool.findVolume(parsed.volume);
    if (!before) return null;
    const grant = await this.#authority.grant(parsed.volume, parsed.epoch, before.record.epoch ?? 0, peer);
    // Looked up again after the (asynchronous) grant: the volume may have gone or been fenced meanwhile.
    const volume = this.#pool.findVolume(parsed.volume);
    if (!volume) return null;
    if (parsed.epoch < (volume.record.epoch ?? 0)) {
      throw new KeelsonError({
        code: "EPOCH_STALE",
        message: `replica ${parsed.volume} is fenced at epoch ${volume.record.epoch}; asked at ${parsed.epoch}`,
      });
    }
    return { volume, epoch: parsed.epoch, grant };
  }
}
