// The one interface every target implements: the suite drives local
// processes, a CSI socket, kind or any kubeconfig through it alike.

/** A rate with a burst allowance. */
export interface RateSpec {
  /** Per second: IOs or bytes. */
  rate: number;
  /** Most saved up (IOs or bytes); default: the target's own. */
  burst?: number;
}

/** QoS asked of a volume. An absent field does not limit. */
export interface QosSpec {
  readIops?: RateSpec;
  writeIops?: RateSpec;
  totalIops?: RateSpec;
  readBytesPerSec?: RateSpec;
  writeBytesPerSec?: RateSpec;
  /** Guaranteed IOPS while the disk is saturated. */
  reservationIops?: number;
}

/** How fio and the checks reach a volume once attached. */
export type AccessMode = "nbd" | "block" | "filesystem";

/** Request of {@link Target.provision}. */
export interface ProvisionRequest {
  /** Unique within the run; 1-63 characters of `a-z 0-9 -`. */
  name: string;
  /** A positive multiple of 1 MiB. */
  sizeBytes: number;
  /** Copies kept (1 = none). */
  replicas: number;
  qos?: QosSpec;
  /** A class (StorageClass parameter set) the target knows; `qos` overrides it. */
  qosClass?: string;
  /** Make a clone of this snapshot, or of this live volume. */
  source?: { snapshot: SnapshotId } | { volume: string };
}

/** A volume the target made. */
export interface ProvisionedVolume {
  name: string;
  sizeBytes: number;
  replicas: number;
}

/** Names a snapshot of a volume. */
export interface SnapshotId {
  volume: string;
  name: string;
}

/** What fio or a check drives: an NBD URI, a block device path or a mounted directory. */
export type DataPath =
  | { kind: "nbd"; uri: string }
  | { kind: "block"; devicePath: string }
  | { kind: "filesystem"; mountPath: string; fsType: "ext4" | "xfs" };

/** Request of {@link Target.attach}. */
export interface AttachRequest {
  volume: string;
  /** Node to serve it from; default: the target's choice. */
  nodeId?: string;
  /** Default "nbd" where the target has it, else "block". */
  mode?: AccessMode;
  /** With mode "filesystem": made on first attach when the volume has none. */
  fsType?: "ext4" | "xfs";
  readOnly?: boolean;
  /** Take the volume over from a node that was lost (its writer is fenced). */
  takeover?: boolean;
}

/** An attached volume; `detach()` undoes what attach made (mounts, devices, attachment). Idempotent. */
export interface AttachedVolume {
  volume: string;
  nodeId: string;
  dataPath: DataPath;
  detach(): Promise<void>;
}

/** Replica and attachment health, as the target reports it. */
export interface VolumeHealth {
  state: "healthy" | "degraded" | "rebuilding" | "faulted" | "detached" | "unknown";
  /** The node serving the volume, or "" when detached. */
  servingNode: string;
  replicas: { nodeId: string; state: "healthy" | "faulted" | "rebuilding" | "unknown" }[];
  /** Bytes copied by the last finished rebuild and how long it took, when known. */
  lastRebuild?: { bytes: number; durationMs: number };
}

/**
 * What a target can do beyond the basic volume lifecycle. A check that needs
 * one the target lacks is "not applicable", never passed.
 */
export type Capability =
  | "replication"
  | "qos-limits"
  | "qos-reservations"
  | "snapshots"
  | "clones"
  | "revert"
  | "expand"
  | "block"
  | "filesystem"
  | "fault-kill-storage-process"
  | "fault-kill-serving-node"
  | "fault-partition-node"
  | "fault-slow-disk"
  | "read-replicas";

/** One line per capability, for `list` and the report. */
export const CAPABILITY_TEXT: Readonly<Record<Capability, string>> = {
  replication: "keeps more than one copy of a volume",
  "qos-limits": "enforces per-volume IOPS and bandwidth limits",
  "qos-reservations": "guarantees per-volume IOPS under contention",
  snapshots: "takes point-in-time snapshots",
  clones: "makes volumes from snapshots or live volumes",
  revert: "reverts a volume to a snapshot in place",
  expand: "grows a volume",
  block: "hands out a block device",
  filesystem: "formats and mounts a filesystem",
  "fault-kill-storage-process": "kills a node's storage process (-9)",
  "fault-kill-serving-node": "kills the node serving a volume",
  "fault-partition-node": "cuts a node off the network",
  "fault-slow-disk": "slows a node's disk",
  "read-replicas": "reads each replica on its own",
};

/**
 * A storage system under test. Every method rejects with a TargetError on
 * failure; none reports success it did not see.
 */
export interface Target extends AsyncDisposable {
  /** "local", "csi", "kind", "kubeconfig". */
  readonly kind: string;
  /** Facts for the report (versions, node count, driver name). */
  readonly description: Readonly<Record<string, string>>;
  readonly capabilities: ReadonlySet<Capability>;
  /** Node ids, in a stable order. */
  nodeIds(): readonly string[];

  /** Creates a volume. Not idempotent: an existing name is an error. */
  provision(request: ProvisionRequest): Promise<ProvisionedVolume>;
  /** Changes a volume's QoS live. Needs "qos-limits". */
  setQos(volume: string, qos: QosSpec): Promise<void>;
  /** Serves the volume on a node and hands back what fio drives. One writable attachment at a time. */
  attach(request: AttachRequest): Promise<AttachedVolume>;
  /** Attaches a snapshot read-only (for reading its contents). Needs "snapshots". */
  attachSnapshot(snapshot: SnapshotId, mode?: AccessMode): Promise<AttachedVolume>;
  /** Takes a crash-consistent snapshot; writes acknowledged before the call are in it, none sent after. Needs "snapshots". */
  snapshot(snapshot: SnapshotId): Promise<void>;
  /** Deletes a snapshot; NOT_FOUND when it does not exist. */
  deleteSnapshot(snapshot: SnapshotId): Promise<void>;
  /** Reverts a detached volume to one of its snapshots. Needs "revert". */
  revert(snapshot: SnapshotId): Promise<void>;
  /** Grows a volume. Needs "expand". */
  expand(volume: string, sizeBytes: number): Promise<void>;
  /** Deletes a detached volume; NOT_FOUND when it does not exist. */
  deleteVolume(volume: string): Promise<void>;
  /** Replica and attachment state now. */
  health(volume: string): Promise<VolumeHealth>;

  /** Fault injection; each needs its capability. */
  readonly faults: TargetFaults;
  /** Each replica's data read on its own (read-only, at rest). Needs "read-replicas". */
  replicaPaths(volume: string): Promise<{ nodeId: string; dataPath: DataPath }[]>;

  /** Copies the target's own logs (daemons, etcd) into `dir`, for a failed run's report; resolves with the files written. */
  collectLogs(dir: string): Promise<string[]>;

  /** Removes everything the target made (volumes, processes, namespaces, devices). Idempotent. */
  close(): Promise<void>;
}

/** Faults a target may inject; a method whose capability is not declared rejects with NOT_SUPPORTED. */
export interface TargetFaults {
  /** SIGKILL the storage process of a node; it stays down until `restore`. */
  killStorageProcess(nodeId: string): Promise<void>;
  /** Kill the whole node serving `volume` (storage process and its exports); returns its id. */
  killServingNode(volume: string): Promise<string>;
  /** Cut a node off the network; it keeps running. */
  partition(nodeId: string): Promise<void>;
  /** Add `latencyMs` to every I/O of a node's disk (0 removes it). */
  slowDisk(nodeId: string, latencyMs: number): Promise<void>;
  /** Undo every fault on a node: restart what was killed, heal a partition, unslow the disk. Resolves once it serves. */
  restore(nodeId: string): Promise<void>;
}
