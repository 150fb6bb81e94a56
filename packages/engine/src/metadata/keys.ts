/**
 * The cluster's key layout: every record lives at `/keelson/v1/<area>/<id>`.
 * This file is the only place that knows it; everything else names records
 * by kind and id ({@link RecordRef}).
 */

/** Where cluster metadata lives. Versioned so that a new layout can sit beside the old one during an upgrade. */
export const KEY_PREFIX = "/keelson/v1";

/** The area (folder) of each record kind under {@link KEY_PREFIX}. */
export const AREAS = {
  /** Registered nodes (kept after a node dies, so the cluster knows it is down). */
  node: "nodes",
  /** Liveness: one key per node, bound to the node's lease. */
  alive: "alive",
  /** Attachment epoch of each volume. */
  epoch: "epochs",
  /** The node that took each volume's current epoch: the only one whose replica connections may write. */
  epochHolder: "epoch-holders",
  /** Replicated volumes. */
  volume: "volumes",
  /** Attachments of each replicated volume. */
  attachments: "attachments",
  /** Snapshots of replicated volumes, `<volume>/<name>`. */
  snapshot: "snapshots",
  /** Each node's disk pool report. */
  disk: "disks",
  /** Each attached volume's status as its writer sees it. */
  status: "status",
  /** Each node's pool space alerts, `<node>/<threshold percent>`: the last crossing of that threshold. */
  spaceAlert: "space-alerts",
  /** Copies of a deleted replicated volume left on nodes that were down: the leader deletes them once they are back. */
  leftover: "leftovers",
} as const;

/** A kind of record the cluster keeps. */
export type RecordKind = keyof typeof AREAS;

/** Names one record: its kind and its id within the kind. */
export interface RecordRef<K extends RecordKind = RecordKind> {
  readonly kind: K;
  readonly id: string;
}

/** The election key's name (the leader election keeps its own keys under it). */
export const LEADER_ELECTION = `${KEY_PREFIX}/leader`;

/** The key prefix of every record of `kind` (ending in a slash). */
export function kindPrefix(kind: RecordKind): string {
  return `${KEY_PREFIX}/${AREAS[kind]}/`;
}

/** The key of one record. */
export function keyOf(ref: RecordRef): string {
  return `${kindPrefix(ref.kind)}${ref.id}`;
}

/** The id of a snapshot record: one per volume and name. */
export function snapshotId(volume: string, name: string): string {
  return `${volume}/${name}`;
}

const KIND_BY_AREA = new Map<string, RecordKind>(Object.entries(AREAS).map(([kind, area]) => [area, kind as RecordKind]));

/** The record a key names, or null for keys that are no record (the election, foreign keys). */
export function parseKey(key: string): RecordRef | null {
  if (!key.startsWith(`${KEY_PREFIX}/`)) return null;
  const rest = key.slice(KEY_PREFIX.length + 1);
  const slash = rest.indexOf("/");
  if (slash < 0) return null;
  const kind = KIND_BY_AREA.get(rest.slice(0, slash));
  const id = rest.slice(slash + 1);
  if (kind === undefined || id === "") return null;
  return { kind, id };
}

/** Constructors of record references, one per kind. */
export const refs = {
  node: (nodeId: string): RecordRef<"node"> => ({ kind: "node", id: nodeId }),
  alive: (nodeId: string): RecordRef<"alive"> => ({ kind: "alive", id: nodeId }),
  epoch: (volume: string): RecordRef<"epoch"> => ({ kind: "epoch", id: volume }),
  epochHolder: (volume: string): RecordRef<"epochHolder"> => ({ kind: "epochHolder", id: volume }),
  volume: (volume: string): RecordRef<"volume"> => ({ kind: "volume", id: volume }),
  attachments: (volume: string): RecordRef<"attachments"> => ({ kind: "attachments", id: volume }),
  snapshot: (volume: string, name: string): RecordRef<"snapshot"> => ({ kind: "snapshot", id: snapshotId(volume, name) }),
  disk: (nodeId: string): RecordRef<"disk"> => ({ kind: "disk", id: nodeId }),
  status: (volume: string): RecordRef<"status"> => ({ kind: "status", id: volume }),
  spaceAlert: (nodeId: string, thresholdPercent: number): RecordRef<"spaceAlert"> => ({
    kind: "spaceAlert",
    id: `${nodeId}/${thresholdPercent}`,
  }),
  leftover: (volume: string): RecordRef<"leftover"> => ({ kind: "leftover", id: volume }),
} as const;
