import { KeelsonError } from "@keelson/sdk";
import type { ClusterMembership } from "../cluster/membership.js";
import type { ReplicaAccess } from "../cluster/replica-access.js";
import type { VolumeAttacher } from "../cluster/volume-attacher.js";
import type { NbdServer } from "../nbd/server.js";
import type { DiskCapability } from "../qos/admission.js";
import type { QosPolicy } from "../qos/policy.js";
import type { QosManager } from "../qos/qos-manager.js";
import type { OpenLocalExport } from "../replication/local-replica.js";
import type { RebuildThrottle } from "../replication/rebuild-throttle.js";
import type { ReplicatedVolume } from "../replication/replicated-volume.js";
import type { Pool } from "../store/pool.js";
import type { Logger } from "../util/log.js";
import type { CallerCheck } from "./roles.js";

/** What the control API serves from. */
export interface ControlContext {
  pool: Pool;
  nbd: NbdServer;
  qos: QosManager;
  /** Named QoS policies from the engine's configuration. */
  qosClasses: ReadonlyMap<string, QosPolicy>;
  /** Measures the disk's capability again (about a second). */
  calibrate(): Promise<DiskCapability>;
  /**
   * This engine's cluster membership; null for a single engine, and until the engine has joined (it joins
   * after the control API is bound, since its node record holds the bound address).
   */
  membership(): ClusterMembership | null;
  /** Who may open this node's replicas (a cluster node only): FenceVolume tells it who fenced. */
  replicaAccess: ReplicaAccess | null;
  /** Replicated volumes attached on this node, by name (the NBD catalog serves them). */
  frontends: Map<string, ReplicatedVolume>;
  /** Paces the rebuilds of every frontend on this node. */
  rebuildThrottle: RebuildThrottle;
  /** Opens one of this node's exports in-process (a frontend's own replica). */
  openLocal: OpenLocalExport;
  /** Attach and detach of replicated volumes on this node (holds the frontends above). */
  attacher: VolumeAttacher;
  zone: string;
  nodeId: string;
  version: string;
  log: Logger;
  /** "certificate-role" on mutual TLS: each call is checked against roles.ts; "none": every caller is admin. */
  callerCheck: CallerCheck;
}

/** This engine's membership, or INVALID_ARGUMENT naming `what` needs a cluster. */
export function requireCluster(ctx: ControlContext, what: string): ClusterMembership {
  const membership = ctx.membership();
  if (membership) return membership;
  throw new KeelsonError({ code: "INVALID_ARGUMENT", message: `${what} needs a cluster: start keelsond with --etcd` });
}
