import type { WireClusterNode, WireNode } from "@keelson/sdk/experimental";
import type { DiskRecord } from "../cluster/disk-reports.js";
import type { ClusterNode } from "../cluster/membership.js";
import { ioEngineReport } from "../device-io/select.js";
import type { ControlContext } from "./context.js";
import { capabilityToWire, policyToWire } from "./qos-wire.js";

/** The wire form of this engine: its pool, listeners, QoS classes and place in the cluster. */
export function nodeToWire(ctx: ControlContext): WireNode {
  const space = ctx.pool.space();
  const reserved = ctx.pool.reserved();
  const provisioning = ctx.pool.provisioning();
  const membership = ctx.membership();
  const io = ioEngineReport();
  return {
    nodeId: ctx.nodeId,
    version: ctx.version,
    pool: {
      uid: ctx.pool.layout.uid,
      path: ctx.pool.device.path,
      totalBytes: space.totalBytes,
      allocatedBytes: space.allocatedBytes,
      freeBytes: space.freeBytes,
      extentSizeBytes: ctx.pool.layout.extentSizeBytes,
      volumeCount: ctx.pool.listVolumes().length,
      snapshotCount: ctx.pool.listSnapshots().length,
      capability: capabilityToWire(ctx.pool.disk),
      reservedIops: reserved.iops,
      reservedBytesPerSec: reserved.bytesPerSec,
      provisionedBytes: provisioning.provisionedBytes,
      overcommitPercent: provisioning.overcommitPercent,
      provisionLimitBytes: provisioning.limitBytes,
      directIo: ctx.pool.device.directIo,
    },
    nbdTcpAddress: ctx.nbd.tcpAddress,
    nbdUnixSocket: ctx.nbd.unixSocket,
    qosClasses: Object.fromEntries([...ctx.qosClasses].map(([k, v]) => [k, policyToWire(v)])),
    zone: ctx.zone,
    leader: membership ? membership.isLeader : true,
    etcdEndpoints: membership ? membership.endpoints : "",
    ioEngine: io.engine,
    ioEngineNote: io.note,
  };
}

function diskToWire(d: DiskRecord | undefined): WireClusterNode["disk"] {
  if (!d) return undefined;
  return {
    poolUid: d.poolUid,
    path: d.path,
    totalBytes: d.totalBytes,
    freeBytes: d.freeBytes,
    volumeCount: d.volumeCount,
    snapshotCount: d.snapshotCount,
    provisionedBytes: d.provisionedBytes ?? 0,
    provisionLimitBytes: d.provisionLimitBytes ?? 0,
    overcommitPercent: d.overcommitPercent ?? 0,
    updatedAt: new Date(d.updatedAtMs),
  };
}

/** The wire form of a cluster node, with the disk report it last published (none yet: no disk). */
export function clusterNodeToWire(n: ClusterNode, disk: DiskRecord | undefined): WireClusterNode {
  return {
    disk: diskToWire(disk),
    nodeId: n.nodeId,
    controlAddress: n.controlAddress,
    nbdAddress: n.nbdAddress,
    storageAddress: n.storageAddress,
    zone: n.zone,
    state: n.state,
    stateSince: new Date(n.stateSinceMs),
    alive: n.alive,
    leader: n.leader,
  };
}

/** A single engine (no cluster) listed as the one node there is: up, leader, no disk report. */
export function selfNodeToWire(ctx: ControlContext): WireClusterNode {
  const host = ctx.nbd.tcpAddress.slice(0, ctx.nbd.tcpAddress.lastIndexOf(":"));
  const self = { nodeId: ctx.nodeId, controlAddress: "", nbdAddress: ctx.nbd.tcpAddress, storageAddress: host, zone: ctx.zone };
  return { ...self, state: "up", stateSince: undefined, alive: true, leader: true, disk: undefined };
}
