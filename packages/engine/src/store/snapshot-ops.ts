import { randomUUID } from "node:crypto";
import { KeelsonError } from "@keelson/sdk";
import type { SnapshotRecord } from "./catalog.js";
import type { Layer } from "./layer.js";
import { collect } from "./layer-gc.js";
import type { PoolCore } from "./pool-core.js";
import {
  MAX_CHAIN_LAYERS,
  MAX_SNAPSHOTS,
  sameLabels,
  validateLabels,
  validateSnapshotName,
  validateVolumeName,
} from "./validation.js";
import { Snapshot, snapshotExportName, type Volume } from "./volume.js";

// Snapshots, reverts and the head sealing that snapshots and clones of a live volume share.
// Each function runs under the pool's control lock (Pool serializes them).

/** Request of `Pool.createSnapshot`. */
export interface CreateSnapshotOptions {
  volumeName: string;
  name: string;
  labels?: Record<string, string>;
}

function inUse(what: string, handles: number): KeelsonError {
  return new KeelsonError({
    code: "VOLUME_IN_USE",
    message: `${what} has ${handles} open connection(s); disconnect them first`,
  });
}

/** LIMIT_EXCEEDED when a new chain of `layers` would be deeper than reads may go. */
export function checkDepth(layers: number, what: string): void {
  if (layers <= MAX_CHAIN_LAYERS) return;
  throw new KeelsonError({
    code: "LIMIT_EXCEEDED",
    message: `${what} would read through ${layers} layers; at most ${MAX_CHAIN_LAYERS} (delete older snapshots to fold them)`,
  });
}

/**
 * Seals the volume's head, gives it a new, empty one, and runs `whileSealed`
 * with the sealed layer before any write reaches the new head. Writes in
 * flight finish first (the gate is taken exclusively), so the sealed layer
 * holds every write completed before the switch and no part of any later
 * one; later writes wait until `whileSealed` (which commits) is done, so no
 * write is acknowledged between the switch and the durable snapshot.
 */
export function sealHead<T>(core: PoolCore, volume: Volume, whileSealed: (sealed: Layer) => Promise<T>): Promise<T> {
  return new Promise<T>((resolve, reject) => {
    volume.gate.enterExclusive(() => {
      const sealed = volume.head;
      const head = core.newLayer(sealed, volume.record.uid);
      volume.record = { ...volume.record, headLayerId: head.id };
      volume.chain = [head, ...volume.chain];
      core.record({ op: "putVolume", volume: volume.record });
      // The gate opens a turn after the caller has the result: a reply the caller
      // sends at once (the gRPC answer) then usually leaves before the first later
      // write is acknowledged. Across two connections that order cannot be promised.
      const reopen = (): void => {
        setImmediate(() => volume.gate.leaveExclusive());
      };
      whileSealed(sealed).then(
        (value) => {
          resolve(value);
          reopen();
        },
        (error: unknown) => {
          reject(error);
          reopen();
        },
      );
    });
  });
}

/** An existing snapshot asked for again: itself when the request matches, else ALREADY_EXISTS. */
function sameSnapshot(existing: Snapshot, volume: Volume, labels: Record<string, string>): Snapshot {
  if (existing.record.volumeUid !== volume.record.uid) {
    throw new KeelsonError({
      code: "ALREADY_EXISTS",
      message: `snapshot ${existing.name} exists from an earlier volume named ${volume.name}; delete it or pick another name`,
    });
  }
  if (sameLabels(existing.record.labels, labels)) return existing;
  throw new KeelsonError({
    code: "ALREADY_EXISTS",
    message: `snapshot ${existing.name} exists with labels ${JSON.stringify(existing.record.labels)}; requested ${JSON.stringify(labels)}`,
  });
}

/** See `Pool.createSnapshot`. */
export async function createSnapshot(core: PoolCore, options: CreateSnapshotOptions): Promise<Snapshot> {
  const volume = core.getVolume(validateVolumeName(options.volumeName));
  const name = validateSnapshotName(options.name);
  const labels = validateLabels(options.labels ?? {});
  const existing = core.snapshots.get(snapshotExportName(volume.name, name));
  if (existing) return sameSnapshot(existing, volume, labels);
  if (core.snapshots.size >= MAX_SNAPSHOTS) {
    throw new KeelsonError({ code: "LIMIT_EXCEEDED", message: `pool holds its maximum of ${MAX_SNAPSHOTS} snapshots` });
  }
  checkDepth(volume.chain.length + 1, `snapshot of volume ${volume.name}`);
  return sealHead(core, volume, async (layer) => {
    const record: SnapshotRecord = {
      uid: randomUUID(),
      name,
      volumeName: volume.name,
      volumeUid: volume.record.uid,
      layerId: layer.id,
      sizeBytes: volume.sizeBytes,
      createdAtMs: Date.now(),
      labels,
    };
    const snap = new Snapshot(record, core.chainOf(layer.id));
    core.snapshots.set(snap.name, snap);
    core.record({ op: "putSnapshot", snapshot: record });
    await core.flush();
    return snap;
  });
}

/** See `Pool.deleteSnapshot`. */
export async function deleteSnapshot(core: PoolCore, volumeName: string, name: string): Promise<number> {
  const snap = core.getSnapshot(volumeName, name);
  if (snap.openHandles > 0) throw inUse(`snapshot ${snap.name}`, snap.openHandles);
  const free0 = core.releasedBytes;
  snap.deleted = true;
  core.snapshots.delete(snap.name);
  core.record({ op: "deleteSnapshot", uid: snap.record.uid });
  await core.flush();
  await collect(core, snap.layer);
  await core.flush();
  return core.releasedBytes - free0;
}

/** See `Pool.revertVolume`. */
export async function revertVolume(core: PoolCore, volumeName: string, snapshotName: string): Promise<Volume> {
  const volume = core.getVolume(volumeName);
  const snap = core.getSnapshot(volumeName, snapshotName);
  if (snap.record.volumeUid !== volume.record.uid) {
    throw new KeelsonError({
      code: "INVALID_ARGUMENT",
      message: `snapshot ${snap.name} was taken of an earlier volume named ${volumeName}; clone it instead`,
    });
  }
  if (volume.openHandles > 0) throw inUse(`volume ${volumeName}`, volume.openHandles);
  const old = volume.head;
  const head = core.newLayer(snap.layer, volume.record.uid);
  volume.record = { ...volume.record, headLayerId: head.id, sizeBytes: snap.sizeBytes };
  core.record({ op: "putVolume", volume: volume.record });
  const parent = core.unlinkLeaf(old);
  core.relink();
  await core.flush();
  await collect(core, parent);
  await core.flush();
  return volume;
}

/** The newest snapshot below `snap` in its chain (its parent snapshot), if any. */
export function parentSnapshotOf(core: PoolCore, snap: Snapshot): Snapshot | undefined {
  const byLayer = new Map<number, Snapshot>();
  for (const s of core.snapshots.values()) if (!byLayer.has(s.record.layerId)) byLayer.set(s.record.layerId, s);
  for (const layer of snap.chain.slice(1)) {
    const found = byLayer.get(layer.id);
    if (found) return found;
  }
  return undefined;
}
