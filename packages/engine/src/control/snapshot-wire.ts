import type { Snapshot as SdkSnapshot } from "@keelson/sdk";
import type { WireSnapshot } from "@keelson/sdk/experimental";
import type { Snapshot } from "../store/volume.js";
import type { ControlContext } from "./context.js";
import { exportToWire } from "./volume-wire.js";

/** The wire form of a snapshot. */
export function snapshotToWire(ctx: ControlContext, s: Snapshot, holders: string[] = []): WireSnapshot {
  return {
    name: s.record.name,
    uid: s.record.uid,
    volume: s.record.volumeName,
    volumeUid: s.record.volumeUid,
    sizeBytes: s.sizeBytes,
    allocatedBytes: ctx.pool.layerBytes(s.layer),
    createdAt: new Date(s.record.createdAtMs),
    labels: { ...s.record.labels },
    parentSnapshot: ctx.pool.parentSnapshotOf(s)?.record.name ?? "",
    export: exportToWire(ctx, s.name),
    connections: s.openHandles,
    holders,
  };
}

/** A snapshot a peer returned (through the SDK), in wire form for this call's caller. */
export function snapshotFromSdk(s: SdkSnapshot): WireSnapshot {
  return { ...s, labels: { ...s.labels } };
}
