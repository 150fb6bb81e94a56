import {
  extentsToBitmap,
  type SnapshotServiceServer,
  type WireDeleteSnapshotResponse,
  type WireListSnapshotsResponse,
  type WireSnapshotChanges,
} from "@keelson/sdk/experimental";
import {
  createReplicatedSnapshot,
  deleteReplicatedSnapshot,
  findSnapshotRecord,
  listSnapshotRecords,
  snapshotFromHolders,
} from "../cluster/cluster-snapshots.js";
import { findClusterVolume } from "../cluster/cluster-volumes.js";
import type { ControlContext } from "./context.js";
import { snapshotFromSdk, snapshotToWire } from "./snapshot-wire.js";
import { requireString, unary } from "./unary.js";

/** keelson.v1.SnapshotService on one engine's pool. */
export function snapshotService(ctx: ControlContext): SnapshotServiceServer {
  const { pool } = ctx;
  return {
    createSnapshot: unary(ctx, "CreateSnapshot", async (req) => {
      const volume = requireString(req.volume, "volume");
      const name = requireString(req.name, "name");
      const m = ctx.membership();
      // A replicated volume's snapshot is taken on each replica at one point, not on this node's copy alone.
      if (!req.replicaOnly && m && (await findClusterVolume(m, volume))) {
        const s = await createReplicatedSnapshot(m, { volume, name, labels: req.labels }, ctx.frontends.get(volume));
        ctx.log.log("info", "replicated snapshot created", { volume, snapshot: name, holders: s.holders });
        return snapshotFromSdk(s);
      }
      const snap = await pool.createSnapshot({ volumeName: volume, name, labels: req.labels });
      return snapshotToWire(ctx, snap);
    }),
    getSnapshot: unary(ctx, "GetSnapshot", async (req) => {
      const volume = requireString(req.volume, "volume");
      const name = requireString(req.name, "name");
      const m = ctx.membership();
      const record = m ? await findSnapshotRecord(m, volume, name) : null;
      const local = pool.findSnapshot(`${volume}@${name}`);
      if (local || !record || !m) return snapshotToWire(ctx, pool.getSnapshot(volume, name), record?.holders);
      return snapshotFromSdk(await snapshotFromHolders(m, record));
    }),
    listSnapshots: unary(ctx, "ListSnapshots", async (req): Promise<WireListSnapshotsResponse> => {
      const volume = req.volume === "" ? undefined : req.volume;
      const m = ctx.membership();
      const records = m ? await listSnapshotRecords(m, volume) : [];
      const holders = new Map(records.map((r) => [`${r.volume}@${r.name}`, r.holders]));
      return { snapshots: pool.listSnapshots(volume).map((s) => snapshotToWire(ctx, s, holders.get(s.name))) };
    }),
    getSnapshotChanges: unary(ctx, "GetSnapshotChanges", async (req): Promise<WireSnapshotChanges> => {
      const volume = requireString(req.volume, "volume");
      // Always this pool's own layers: a replica rebuild asks each node about its copy.
      const changes = pool.changes(volume, req.name, req.baseSnapshot);
      const count = Math.ceil(changes.sizeBytes / changes.extentBytes);
      return {
        extentBytes: changes.extentBytes,
        sizeBytes: changes.sizeBytes,
        extents: extentsToBitmap(changes.extents, count),
      };
    }),
    deleteSnapshot: unary(ctx, "DeleteSnapshot", async (req): Promise<WireDeleteSnapshotResponse> => {
      const volume = requireString(req.volume, "volume");
      const name = requireString(req.name, "name");
      const startedMs = Date.now();
      const m = ctx.membership();
      if (!req.replicaOnly && m) {
        const freed = await deleteReplicatedSnapshot(m, volume, name);
        if (freed !== null) {
          ctx.log.log("info", "replicated snapshot deleted", { volume, snapshot: name, freedBytes: freed });
          return { freedBytes: freed };
        }
      }
      const freedBytes = await pool.deleteSnapshot(volume, name);
      ctx.log.log("info", "snapshot deleted", { volume, snapshot: name, freedBytes, foldMs: Date.now() - startedMs });
      return { freedBytes };
    }),
  };
}
