import { KeelsonError } from "@keelson/sdk";
import type { QosPolicyRecord } from "../store/catalog.js";
import { messageOf } from "../util/errors.js";
import { keyOf, type RecordKind, type RecordRef } from "./keys.js";

/** A node as registered in the cluster (kept after it dies, so the cluster knows it is down). */
export interface NodeRecord {
  nodeId: string;
  /** Control API, `host:port`. */
  controlAddress: string;
  /** NBD endpoint, `host:port`. */
  nbdAddress: string;
  /** Address for replica (storage) traffic; the control address's host when not set apart. */
  storageAddress: string;
  /**
   * The replica protocol's `host:port` (on the storage address): where peers' frontends open this
   * node's replicas. Absent in records of engines from before it was split from the application export.
   */
  replicaAddress?: string;
  /** Topology label used to spread replicas. */
  zone: string;
  version: string;
  registeredAtMs: number;
  /** Set by the leader's reconciler from the node's liveness lease. */
  state: "up" | "down";
  stateSinceMs: number;
}

/** A replicated volume as the cluster records it. */
export interface ClusterVolumeRecord {
  name: string;
  sizeBytes: number;
  /** Nodes holding a replica. */
  replicas: string[];
  /**
   * Replicas known to hold every acknowledged write. A frontend takes a
   * replica out of this set (under its epoch) before it acknowledges a write
   * that replica missed, so a later attach never serves from it.
   */
  inSync: string[];
  /** Nodes whose replica was replaced: the stale copy left there is deleted once the node is back. */
  retired?: string[];
  /** QoS limits the frontend applies to the volume's I/O wherever it is attached; none when absent. */
  qos?: QosPolicyRecord;
  /** The named class `qos` came from; "" or absent when it was given as limits. */
  qosClass?: string;
  /**
   * Write quorum: a write is acknowledged only once at least this many
   * in-sync replicas hold it (below it, writes wait, then fail). Absent in
   * records made before it existed: {@link defaultMinInSync} applies.
   */
  minInSync?: number;
  /** The operator's last declaration that one replica holds the volume (DeclareInSync). */
  declared?: { nodeId: string; reason: string; atMs: number };
  createdAtMs: number;
}

/**
 * The write quorum a volume of `replicas` copies gets unless asked: 2 from
 * 3 replicas up (a write never rests on one node alone, and one replica may
 * be lost without a stall), 1 below (one replica left of 2 serves on).
 */
export function defaultMinInSync(replicas: number): number {
  return Math.max(1, Math.min(2, replicas - 1));
}

/** The volume's write quorum: its own, or the default; at least 1 and never more than its replicas. */
export function minInSyncOf(record: ClusterVolumeRecord): number {
  return Math.max(1, Math.min(record.minInSync ?? defaultMinInSync(record.replicas.length), record.replicas.length));
}

/** Who took a volume's epoch: written with the epoch, in the same transaction. */
export interface EpochHolderRecord {
  epoch: number;
  nodeId: string;
}

/** One node's attachment of a volume. */
export interface AttachmentEntry {
  nodeId: string;
  readOnly: boolean;
  /** The writer's own epoch; a reader's is the epoch current when it attached. */
  epoch: number;
  attachedAtMs: number;
}

/** A snapshot of a replicated volume. */
export interface SnapshotRecord {
  volume: string;
  name: string;
  /** Nodes whose replica holds it. */
  holders: string[];
  labels: Record<string, string>;
  createdAtMs: number;
}

/** A node's disk pool as it last reported it. */
export interface DiskRecord {
  nodeId: string;
  poolUid: string;
  path: string;
  totalBytes: number;
  freeBytes: number;
  volumeCount: number;
  snapshotCount: number;
  /** Sum of the pool's volume sizes; absent in reports of engines from before over-commit limits. */
  provisionedBytes?: number;
  /** Most the pool's over-commit limit allows; absent likewise. */
  provisionLimitBytes?: number;
  overcommitPercent?: number;
  updatedAtMs: number;
}

/** One replica in a {@link VolumeStatusRecord}. */
export interface ReplicaStatusRecord {
  nodeId: string;
  state: string;
  rebuiltBytes: number;
  rebuildTotalBytes: number;
}

/** An attached volume's status as its writer publishes it. */
export interface VolumeStatusRecord {
  nodeId: string;
  epoch: number;
  state: string;
  replicas: ReplicaStatusRecord[];
}

/** The last crossing of one used-space threshold of a node's pool (a watch sees each put as an event). */
export interface SpaceAlertRecord {
  nodeId: string;
  poolUid: string;
  /** Percent of the pool's data capacity in use; 100: full (no free extent). */
  thresholdPercent: number;
  /** "raised": usage reached the threshold; "cleared": it fell back below it by the re-arm margin. */
  state: "raised" | "cleared";
  usedBytes: number;
  totalBytes: number;
  atMs: number;
}

/** Copies of a deleted replicated volume still on nodes that were down or did not answer when it was deleted. */
export interface LeftoverRecord {
  /** Nodes whose copy (a volume labelled `keelson.io/replica-of` the volume) is still to be deleted. */
  nodes: string[];
}

/** The record type stored for each kind. */
export interface RecordTypes {
  node: NodeRecord;
  /** The time (ms) the node took its lease; the key's presence is what counts. */
  alive: number;
  /** The volume's current attachment epoch. */
  epoch: number;
  epochHolder: EpochHolderRecord;
  volume: ClusterVolumeRecord;
  attachments: AttachmentEntry[];
  snapshot: SnapshotRecord;
  disk: DiskRecord;
  status: VolumeStatusRecord;
  spaceAlert: SpaceAlertRecord;
  leftover: LeftoverRecord;
}

/** Checks one value; returns what is wrong with it (naming the field), or null when it fits. */
type Check = (value: unknown, path: string) => string | null;

const isObject = (v: unknown): v is Record<string, unknown> => typeof v === "object" && v !== null && !Array.isArray(v);

const str: Check = (v, p) => (typeof v === "string" ? null : `${p} is not a string`);
const bool: Check = (v, p) => (typeof v === "boolean" ? null : `${p} is not a boolean`);
const num: Check = (v, p) => (typeof v === "number" && Number.isFinite(v) ? null : `${p} is not a finite number`);
const count: Check = (v, p) => (Number.isSafeInteger(v) && (v as number) >= 0 ? null : `${p} is not a non-negative integer`);
const oneOf =
  (...values: readonly string[]): Check =>
  (v, p) =>
    values.includes(v as string) ? null : `${p} is not one of ${values.join(", ")}`;
const optional =
  (check: Check): Check =>
  (v, p) =>
    v === undefined ? null : check(v, p);
const arrayOf =
  (check: Check): Check =>
  (v, p) => {
    if (!Array.isArray(v)) return `${p} is not an array`;
    for (let i = 0; i < v.length; i++) {
      const problem = check(v[i], `${p}[${i}]`);
      if (problem) return problem;
    }
    return null;
  };
const object =
  (fields: Record<string, Check>): Check =>
  (v, p) => {
    if (!isObject(v)) return `${p} is not an object`;
    for (const [name, check] of Object.entries(fields)) {
      const problem = check(v[name], `${p}.${name}`);
      if (problem) return problem;
    }
    return null;
  };
const stringMap: Check = (v, p) => {
  if (!isObject(v)) return `${p} is not an object`;
  for (const [k, value] of Object.entries(v)) if (typeof value !== "string") return `${p}.${k} is not a string`;
  return null;
};

const rateLimit = object({ rate: num, burst: optional(num) });
const qosPolicy = object({
  limits: object({
    readIops: optional(rateLimit),
    writeIops: optional(rateLimit),
    totalIops: optional(rateLimit),
    readBytesPerSec: optional(rateLimit),
    writeBytesPerSec: optional(rateLimit),
  }),
  reservationIops: num,
  reservationBytesPerSec: num,
  weight: num,
});

const attachmentEntry = object({ nodeId: str, readOnly: bool, epoch: count, attachedAtMs: num });

/** The shape of each kind's record. */
const CHECKS: { readonly [K in RecordKind]: Check } = {
  node: object({
    nodeId: str,
    controlAddress: str,
    nbdAddress: str,
    storageAddress: str,
    replicaAddress: optional(str),
    zone: str,
    version: str,
    registeredAtMs: num,
    state: oneOf("up", "down"),
    stateSinceMs: num,
  }),
  alive: num,
  epoch: count,
  epochHolder: object({ epoch: count, nodeId: str }),
  volume: object({
    name: str,
    sizeBytes: count,
    replicas: arrayOf(str),
    inSync: arrayOf(str),
    retired: optional(arrayOf(str)),
    qos: optional(qosPolicy),
    qosClass: optional(str),
    minInSync: optional(count),
    declared: optional(object({ nodeId: str, reason: str, atMs: num })),
    createdAtMs: num,
  }),
  attachments: arrayOf(attachmentEntry),
  snapshot: object({ volume: str, name: str, holders: arrayOf(str), labels: stringMap, createdAtMs: num }),
  disk: object({
    nodeId: str,
    poolUid: str,
    path: str,
    totalBytes: count,
    freeBytes: count,
    volumeCount: count,
    snapshotCount: count,
    provisionedBytes: optional(count),
    provisionLimitBytes: optional(count),
    overcommitPercent: optional(count),
    updatedAtMs: num,
  }),
  status: object({
    nodeId: str,
    epoch: count,
    state: str,
    replicas: arrayOf(object({ nodeId: str, state: str, rebuiltBytes: count, rebuildTotalBytes: count })),
  }),
  spaceAlert: object({
    nodeId: str,
    poolUid: str,
    thresholdPercent: count,
    state: oneOf("raised", "cleared"),
    usedBytes: count,
    totalBytes: count,
    atMs: num,
  }),
  leftover: object({ nodes: arrayOf(str) }),
};

/** What is wrong with `value` as a record of `kind`, or null when it is one. */
export function recordProblem(kind: RecordKind, value: unknown): string | null {
  return CHECKS[kind](value, kind);
}

/** The stored form of a record. */
export function encodeRecord<K extends RecordKind>(_kind: K, value: RecordTypes[K]): string {
  return JSON.stringify(value);
}

/**
 * The record stored at `ref`, checked against its kind's shape.
 * METADATA_CORRUPT (naming the key) when it is no valid JSON or not that shape:
 * records come from outside the process and are never trusted unchecked.
 */
export function decodeRecord<K extends RecordKind>(ref: RecordRef<K>, stored: string): RecordTypes[K] {
  let value: unknown;
  try {
    value = JSON.parse(stored);
  } catch (error) {
    throw new KeelsonError({
      code: "METADATA_CORRUPT",
      message: `cluster record ${keyOf(ref)} is not valid JSON: ${messageOf(error)}`,
      cause: error,
    });
  }
  const problem = recordProblem(ref.kind, value);
  if (problem) {
    throw new KeelsonError({ code: "METADATA_CORRUPT", message: `cluster record ${keyOf(ref)} is malformed: ${problem}` });
  }
  return value as RecordTypes[K];
}

/** Like {@link decodeRecord}, but null instead of an error (for a watch, which must not end on one bad record). */
export function tryDecodeRecord<K extends RecordKind>(ref: RecordRef<K>, stored: string): RecordTypes[K] | null {
  try {
    return decodeRecord(ref, stored);
  } catch {
    return null;
  }
}
