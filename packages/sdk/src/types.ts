/** Health of a volume as a whole. */
export type VolumeState = "healthy" | "degraded" | "rebuilding" | "faulted" | "unknown";

/** Where a volume is served over NBD. */
export interface VolumeExport {
  /** NBD export name (the volume name). */
  exportName: string;
  /** `nbd://host:port/name`, or "" when the engine serves no TCP listener. */
  nbdTcpUri: string;
  /** `nbd+unix:///name?socket=/path`, or "" when the engine serves no unix socket. */
  nbdUnixUri: string;
}

/** A thin-provisioned block volume. */
export interface Volume {
  name: string;
  /** Stable unique id; a re-created volume gets a new one. */
  uid: string;
  sizeBytes: number;
  /** Pool bytes that this volume's data occupies. */
  allocatedBytes: number;
  state: VolumeState;
  labels: Readonly<Record<string, string>>;
  createdAt: Date;
  replicas: number;
  export: VolumeExport;
  /** NBD connections open to the volume now. */
  connections: number;
  /** What the volume was cloned from; undefined for an empty volume. */
  source?: VolumeSource;
  /** The QoS class the policy came from, or "". */
  qosClass: string;
  /** Limits, reservation and weight in force. */
  qos: QosPolicy;
  /** What QoS did to this volume's I/O so far. */
  qosStatus: QosStatus;
  /** Highest attachment epoch fenced on this replica (0: never fenced). */
  epoch: number;
  /** The write-intent log this replica keeps for the volume's frontend; undefined when none was saved here. */
  activityLog?: ActivityLog;
  /**
   * A cluster volume: recorded in the cluster, attachable on any node and
   * served by the replicated frontend, whatever `replicas` is. False for a
   * volume of one node's pool (served by that node only).
   */
  replicated: boolean;
}

/**
 * A replicated volume's frontend write-intent log as one replica keeps it:
 * the extents a write may have been in flight in when that frontend stopped.
 */
export interface ActivityLog {
  /** Attachment epoch of the frontend that saved it. */
  epoch: number;
  /** That frontend's save number. */
  sequence: number;
  extentBytes: number;
  /** Every extent may differ. */
  all: boolean;
  /** Extent indexes, ascending (empty when `all`). */
  extents: number[];
}

/** A replicated volume attached on one node. */
export interface Attachment {
  volume: string;
  nodeId: string;
  epoch: number;
  export: VolumeExport;
  replicas: ReplicaStatus[];
  /** `degraded`: a replica is faulted; `rebuilding`: none is, one is being rebuilt. */
  state: "healthy" | "degraded" | "rebuilding" | "faulted";
  /** Longest time a write waited on a replica that then faulted (ms). */
  maxStallMs: number;
  /** Rebuilds finished since the volume was attached on this node. */
  rebuildsCompleted: number;
  /** A read-only attachment: its export refuses writes (READ_ONLY). */
  readOnly: boolean;
}

/** Options of {@link KeelsonClient.waitFor}. */
export interface WaitForOptions {
  /** Give up after this long with DEADLINE_EXCEEDED (default 60000). */
  timeoutMs?: number;
  /** Between polls (default 200). */
  intervalMs?: number;
  signal?: AbortSignal;
}

/** Request of {@link KeelsonClient.createAndAttach}. */
export interface CreateAndAttachRequest extends CreateVolumeRequest {
  /** The node to serve it from (default: the node called). */
  nodeId?: string;
  readOnly?: boolean;
  /** Per-request deadline of each replica (default 2000 ms). */
  replicaTimeoutMs?: number;
}

/** Request of {@link KeelsonClient.snapshotThenClone}. */
export interface SnapshotThenCloneRequest {
  /** The volume to snapshot. */
  volume: string;
  /** Name of the snapshot taken. */
  snapshot: string;
  /** Name of the clone made from it. */
  clone: string;
  labels?: Record<string, string>;
}

/** Where a volume is attached, as the cluster records it. */
export interface AttachmentRecord {
  nodeId: string;
  readOnly: boolean;
  epoch: number;
  attachedAt?: Date;
}

/** Request of {@link KeelsonClient.detachVolume}. */
export interface DetachVolumeRequest {
  name: string;
  /** The node to detach from (default: the node called). */
  nodeId?: string;
  /** Detach even while NBD clients are connected. */
  force?: boolean;
}

/** One replica of an attached volume. */
export interface ReplicaStatus {
  nodeId: string;
  /** `rebuilding`: it takes every write while what it lacks is copied to it. */
  state: "healthy" | "faulted" | "rebuilding";
  reason: string;
  faultedAt?: Date;
  /** While rebuilding: bytes copied so far and in all. */
  rebuiltBytes: number;
  rebuildTotalBytes: number;
  /** The rebuild copies the whole volume (nothing was known of what the replica lacks). */
  fullRebuild: boolean;
  /** Its last finished rebuild. */
  lastRebuild?: { bytes: number; durationMs: number; full: boolean };
}

/** Request of {@link KeelsonClient.attachVolume}. */
export interface AttachVolumeRequest {
  name: string;
  /** Per-request deadline of each replica (default 2000 ms). */
  replicaTimeoutMs?: number;
  /** The node to serve the volume from (default: the node called). */
  nodeId?: string;
  /** A read-only attachment: many may coexist, none with a writable one. */
  readOnly?: boolean;
  /** Take a writable attachment over from another node (one that was lost); its frontend is fenced. */
  takeover?: boolean;
}

/** Request of {@link KeelsonClient.declareInSync}. */
export interface DeclareInSyncRequest {
  name: string;
  /** The node whose replica becomes the only one in sync. */
  nodeId: string;
  /** Why, for the record (required). */
  reason: string;
}

/** Request of {@link KeelsonClient.fenceVolume}. */
export interface FenceVolumeRequest {
  name: string;
  /** The new attachment epoch; NBD I/O under an older one is refused from now on. */
  epoch: number;
}

/** A rate with a burst allowance (token bucket). */
export interface RateLimit {
  /** Per second: IOs or bytes. */
  rate: number;
  /** Most saved up; default a tenth of a second's worth. */
  burst?: number;
}

/** Per-volume limits; an absent one does not limit. */
export interface QosLimits {
  readIops?: RateLimit;
  writeIops?: RateLimit;
  totalIops?: RateLimit;
  readBytesPerSec?: RateLimit;
  writeBytesPerSec?: RateLimit;
}

/** A volume's QoS policy. */
export interface QosPolicy {
  limits?: QosLimits;
  /** Guaranteed IOPS while the disk is saturated; admitted against the disk's capability. */
  reservationIops?: number;
  /** Guaranteed bytes/s, admitted against the disk's bandwidth. */
  reservationBytesPerSec?: number;
  /** Share of the capacity beyond reservations (default 1). */
  weight?: number;
}

/** What QoS did to a volume's I/O so far. */
export interface QosStatus {
  /** Milliseconds during which I/O waited on the volume's limits. */
  throttledMs: number;
  /** I/Os that waited on a limit. */
  delayedIos: number;
  /** I/Os waiting now. */
  queuedIos: number;
  /** I/Os the disk scheduler started to meet the reservation, and by weight. */
  servedByReservation: number;
  servedByWeight: number;
}

/** What a disk can do, measured by calibration or set by the operator. */
export interface DiskCapability {
  iops: number;
  bytesPerSec: number;
  source: "calibrated" | "operator" | "";
  measuredAt: Date;
  /** Fraction never promised to reservations. */
  headroom: number;
}

/** Request of {@link KeelsonClient.setVolumeQos}. */
export interface SetVolumeQosRequest {
  name: string;
  /** A class from the engine's QoS classes; fields in `qos` override it. */
  qosClass?: string;
  qos?: QosPolicy;
}

/** Request of {@link KeelsonClient.setDiskCapability}. */
export interface SetDiskCapabilityRequest {
  /** Measure again (about a second) instead of taking the numbers given. */
  recalibrate?: boolean;
  iops?: number;
  bytesPerSec?: number;
  /** Fraction never promised to reservations; default: keep. */
  headroom?: number;
}

/** Names one snapshot: the volume it was taken of and its name. */
export interface SnapshotRef {
  volume: string;
  name: string;
}

/** What a clone shares its data with: a snapshot, or a live volume (through an implicit snapshot). */
export type VolumeSource = { snapshot: SnapshotRef } | { volume: string };

/** A point-in-time, read-only image of a volume. */
export interface Snapshot {
  name: string;
  uid: string;
  /** The volume it was taken of; the snapshot outlives it. */
  volume: string;
  volumeUid: string;
  /** The volume's size when the snapshot was taken. */
  sizeBytes: number;
  /** Pool bytes only this snapshot holds. */
  allocatedBytes: number;
  createdAt: Date;
  labels: Readonly<Record<string, string>>;
  /** The next older snapshot in the same chain, or "". */
  parentSnapshot: string;
  /** Read-only NBD export, named `VOLUME@SNAPSHOT`. */
  export: VolumeExport;
  connections: number;
  /** Of a replicated volume: the nodes whose replica holds it (each serves its export); empty otherwise. */
  holders: string[];
}

/** Request of {@link KeelsonClient.createSnapshot}. */
export interface CreateSnapshotRequest {
  /** The volume to snapshot. */
  volume: string;
  /** Same rules as volume names; unique per volume. */
  name: string;
  labels?: Record<string, string>;
  /** Between engines (a frontend snapshotting each replica); applications leave it unset. */
  replicaOnly?: boolean;
}

/** Request of {@link KeelsonClient.deleteSnapshot}. */
export interface DeleteSnapshotRequest extends SnapshotRef {
  /** Between engines: this node's replica only; applications leave it unset. */
  replicaOnly?: boolean;
}

/** Request of {@link KeelsonClient.listSnapshots}. */
export interface ListSnapshotsRequest {
  /** Only the snapshots of this volume; all when omitted. */
  volume?: string;
}

/** Request of {@link KeelsonClient.getSnapshotChanges}. */
export interface GetSnapshotChangesRequest {
  volume: string;
  /** The snapshot whose changes are asked for; the volume's head when omitted or "". */
  name?: string;
  /** The older snapshot they are relative to; an empty volume when omitted or "". */
  baseSnapshot?: string;
}

/** Extents of a snapshot (or head) that may differ from an older snapshot, on one engine's pool. */
export interface SnapshotChanges {
  /** Bytes each extent covers (the pool's extent size). */
  extentBytes: number;
  /** Size of the snapshot (or head). */
  sizeBytes: number;
  /** Extent numbers (offset / extentBytes) that may differ, ascending. */
  extents: number[];
}

/** Request of {@link KeelsonClient.revertVolume}. */
export interface RevertVolumeRequest {
  /** The volume to revert; it must have no open connections. */
  name: string;
  /** A snapshot of that volume. */
  snapshot: string;
}

/** Space of the engine's disk pool. */
export interface Pool {
  uid: string;
  path: string;
  totalBytes: number;
  allocatedBytes: number;
  freeBytes: number;
  extentSizeBytes: number;
  volumeCount: number;
  snapshotCount: number;
  /** What the disk can do; undefined until calibrated. */
  capability?: DiskCapability;
  /** Reservations admitted on this disk. */
  reservedIops: number;
  reservedBytesPerSec: number;
  /** Sum of the sizes of the pool's volumes (thin: what they may grow to). */
  provisionedBytes: number;
  /** Over-commit limit: `provisionedBytes` may reach this percent of `totalBytes` (`keelsond --overcommit-percent`). */
  overcommitPercent: number;
  /** `totalBytes` x `overcommitPercent` / 100: creates and resizes past it fail with LIMIT_EXCEEDED. */
  provisionLimitBytes: number;
  /** Volumes' blocks are read and written with O_DIRECT, bypassing the page cache (`keelsond --direct-io`). */
  directIo: boolean;
}

/** One engine: identity, pool and endpoints. */
export interface NodeInfo {
  nodeId: string;
  version: string;
  pool: Pool;
  /** `host:port` of the NBD TCP listener, or "". */
  nbdTcpAddress: string;
  /** Path of the NBD unix socket, or "". */
  nbdUnixSocket: string;
  /** QoS classes the engine knows, by name. */
  qosClasses: Readonly<Record<string, QosPolicy>>;
  /** Topology label of this node. */
  zone: string;
  /** This engine holds the cluster's leader election (always true without etcd). */
  leader: boolean;
  /** etcd client URLs of the cluster, or "" for a single engine. */
  etcdEndpoints: string;
  /** How the engine's disk I/O reaches the kernel. */
  ioEngine: "io_uring" | "threadpool" | "unknown";
  /** Why that engine (asked for, or why io_uring could not be used); "" when io_uring was chosen by default. */
  ioEngineNote: string;
}

/** A node of the cluster as etcd knows it. */
export interface ClusterNode {
  nodeId: string;
  controlAddress: string;
  nbdAddress: string;
  storageAddress: string;
  zone: string;
  /** As the leader last recorded it. */
  state: "up" | "down" | "unknown";
  stateSince: Date;
  /** Its liveness lease is held now. */
  alive: boolean;
  leader: boolean;
  /** Its disk pool as it last reported it to etcd (kept while the node is down). */
  disk?: DiskReport;
}

/** A node's disk pool as recorded in etcd. */
export interface DiskReport {
  poolUid: string;
  path: string;
  totalBytes: number;
  freeBytes: number;
  volumeCount: number;
  snapshotCount: number;
  updatedAt: Date;
  /** Sum of the pool's volume sizes (0 when the node did not report it). */
  provisionedBytes: number;
  /** Most its over-commit limit allows; 0 when not reported. */
  provisionLimitBytes: number;
  /** The node's over-commit limit in percent; 0 when not reported. */
  overcommitPercent: number;
}

/** Request of {@link KeelsonClient.createVolume}. */
export interface CreateVolumeRequest {
  /** 1-63 characters of `a-z 0-9 - _ .`, starting with a letter or digit. */
  name: string;
  /** A positive multiple of 4096. */
  sizeBytes: number;
  labels?: Record<string, string>;
  /** Replicas wanted; default 1. */
  replicas?: number;
  /** Makes a clone; `sizeBytes` 0 then means the source's size. */
  source?: VolumeSource;
  /** A QoS class from the engine's configuration; fields in `qos` override it. */
  qosClass?: string;
  qos?: QosPolicy;
  /**
   * Write quorum of a replicated volume: in-sync replicas that must hold a
   * write before it is acknowledged (below it writes wait, then fail
   * UNAVAILABLE). Default 2 from 3 replicas up, else 1; at most `replicas`.
   */
  minInSync?: number;
  /**
   * Make a cluster volume even with one replica: recorded in the cluster,
   * attachable on any node, served by the replicated frontend. Implied by
   * `replicas` > 1; without it one replica is a volume of this node's pool,
   * served by this node only. INVALID_ARGUMENT on an engine not in a cluster.
   */
  replicated?: boolean;
}

/** Request naming one volume. */
export interface VolumeRef {
  name: string;
}

/** Request of {@link KeelsonClient.getVolume}. */
export interface GetVolumeRequest extends VolumeRef {
  /** Between engines: this node's own replica only (VOLUME_NOT_FOUND when it holds none); applications leave it unset. */
  replicaOnly?: boolean;
}

/** Request of {@link KeelsonClient.deleteVolume}. */
export interface DeleteVolumeRequest {
  name: string;
  /**
   * Disconnect open NBD clients instead of failing with VOLUME_IN_USE; for a
   * replicated volume, detach it wherever it is attached (its frontends are
   * fenced at a new epoch first).
   */
  force?: boolean;
  /** Between engines: this node's replica only; applications leave it unset. */
  replicaOnly?: boolean;
}

/** Result of {@link KeelsonClient.deleteVolume} and {@link KeelsonClient.deleteSnapshot}. */
export interface DeleteVolumeResult {
  /** Bytes returned to the pool. */
  freedBytes: number;
}

/** Request of {@link KeelsonClient.resizeVolume}. */
export interface ResizeVolumeRequest {
  name: string;
  /** New size: a multiple of 4096, not smaller than the current one. */
  sizeBytes: number;
  /** Between engines: this node's replica only; applications leave it unset. */
  replicaOnly?: boolean;
}

/** Per-call options accepted by every client method. */
export interface CallOptions {
  /** Deadline of this call; defaults to the client's `defaultTimeoutMs`. */
  timeoutMs?: number;
  /** Cancels the call (and its retries); the call rejects with CANCELLED. */
  signal?: AbortSignal;
}

/** Where an event is in the cluster's history; a watch resumes after it. */
export interface EventCursor {
  /** etcd revision of the change. */
  revision: number;
  /** Its place among the changes of that revision. */
  index: number;
}

interface EventBase {
  cursor: EventCursor;
  /** When the engine sent it. */
  at: Date;
}

/** A replicated volume was created, changed (replica set, in-sync set) or deleted. */
export interface VolumeChangedEvent extends EventBase {
  kind: "volume";
  volume: string;
  deleted: boolean;
  replicas: string[];
  inSync: string[];
  sizeBytes: number;
  /** The operator's last {@link KeelsonClient.declareInSync} of this volume, if any. */
  declared?: InSyncDeclaration;
}

/** An operator's decision that one replica holds the volume (see {@link KeelsonClient.declareInSync}). */
export interface InSyncDeclaration {
  nodeId: string;
  reason: string;
  at: Date;
}

/** Where a volume is attached now. */
export interface AttachmentsChangedEvent extends EventBase {
  kind: "attachments";
  volume: string;
  attachments: { nodeId: string; readOnly: boolean; epoch: number }[];
}

/** A snapshot of a replicated volume was taken or deleted. */
export interface SnapshotChangedEvent extends EventBase {
  kind: "snapshot";
  volume: string;
  name: string;
  deleted: boolean;
  holders: string[];
}

/** A node was marked up or down by the leader, or its liveness lease was taken or lost. */
export interface NodeChangedEvent extends EventBase {
  kind: "node";
  nodeId: string;
  /** Set when the leader recorded a new state. */
  state?: "up" | "down";
  /** Set when its liveness changed. */
  alive?: boolean;
}

/** The attached frontend's view changed: volume state, a replica's state, or rebuild progress (at most once a second). */
export interface VolumeStatusEvent extends EventBase {
  kind: "status";
  volume: string;
  /** Where it is attached writable. */
  nodeId: string;
  epoch: number;
  state: "healthy" | "degraded" | "rebuilding" | "faulted" | "detached";
  replicas: { nodeId: string; state: "healthy" | "faulted" | "rebuilding"; rebuiltBytes: number; rebuildTotalBytes: number }[];
}

/**
 * A node's pool crossed a used-space threshold (80%, 90%, 100% = full): raised once when usage reaches it,
 * cleared once it falls back below it by a margin, not on every write in between.
 */
export interface PoolSpaceAlertEvent extends EventBase {
  kind: "spaceAlert";
  nodeId: string;
  poolUid: string;
  thresholdPercent: number;
  state: "raised" | "cleared";
  usedBytes: number;
  totalBytes: number;
}

/** What {@link KeelsonClient.watch} yields. */
export type KeelsonEvent =
  | VolumeChangedEvent
  | AttachmentsChangedEvent
  | SnapshotChangedEvent
  | NodeChangedEvent
  | VolumeStatusEvent
  | PoolSpaceAlertEvent;

/** Options of {@link KeelsonClient.watch}. */
export interface WatchOptions {
  /** Only this volume's events (and the nodes'). */
  volume?: string;
  /** Resume after this event (from its `cursor`); from now when omitted. */
  after?: EventCursor;
  /** Ends the watch (the iterator returns). */
  signal?: AbortSignal;
}
