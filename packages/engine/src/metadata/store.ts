import type { KeelsonError } from "@keelson/sdk";
import type { RecordKind, RecordRef } from "./keys.js";
import type { AttachmentEntry, ClusterVolumeRecord, RecordTypes, SpaceAlertRecord, VolumeStatusRecord } from "./records.js";

/**
 * Opaque token of one stored version of a record (from {@link MetadataStore.get});
 * a {@link Condition} holds while the record is still that version.
 */
export type Version = string & { readonly __version: unique symbol };

/** A record as read, with the version to compare-and-swap against. */
export interface Versioned<K extends RecordKind> {
  readonly ref: RecordRef<K>;
  readonly value: RecordTypes[K];
  readonly version: Version;
}

/** A condition of a {@link Transaction}, on one record. */
export type Condition =
  /** The record is still at `version`, or (with null) does not exist. */
  | { readonly ref: RecordRef; readonly version: Version | null }
  /** The record's value equals `value` (used for epochs: a number compares by value). */
  | { readonly ref: RecordRef<"epoch">; readonly equals: number };

/** One write of a {@link Transaction}. */
export type Put = { [K in RecordKind]: { readonly ref: RecordRef<K>; readonly value: RecordTypes[K] } }[RecordKind];

/** Writes applied together, all or none, only while every condition holds. */
export interface Transaction {
  readonly if: readonly Condition[];
  readonly put?: readonly Put[];
  readonly delete?: readonly RecordRef[];
}

/** Index meaning "every change of that revision": a cursor that starts "from now". */
export const ALL_OF_REVISION = 0xffff_ffff;

/**
 * Where a watch stands: the changes up to revision `revision` and, within it,
 * up to index `index` (every key change of a revision counts, so the same
 * cursor means the same place on every reconnect).
 */
export interface WatchCursor {
  revision: number;
  index: number;
}

/** A change of cluster metadata, decoded (changes that are no event, such as epochs, are not reported). */
export type MetadataEvent =
  /** `record` is null when it was deleted or is unreadable. */
  | { readonly type: "volume"; readonly volume: string; readonly deleted: boolean; readonly record: ClusterVolumeRecord | null }
  | { readonly type: "attachments"; readonly volume: string; readonly entries: readonly AttachmentEntry[] }
  | {
      readonly type: "snapshot";
      readonly volume: string;
      readonly name: string;
      readonly deleted: boolean;
      readonly holders: readonly string[];
    }
  /** A node's record changed; `state` is "" when it was deleted or unreadable. */
  | { readonly type: "node"; readonly nodeId: string; readonly state: string }
  | { readonly type: "alive"; readonly nodeId: string; readonly alive: boolean }
  | { readonly type: "status"; readonly volume: string; readonly status: VolumeStatusRecord }
  /** A node's pool crossed a used-space threshold (see `store/space-alarm.ts`). */
  | { readonly type: "spaceAlert"; readonly alert: SpaceAlertRecord };

/** One decoded change and where it stands in the history. */
export interface WatchedEvent {
  readonly revision: number;
  readonly index: number;
  readonly event: MetadataEvent;
}

/** What a watch reports to. */
export interface WatchHandlers {
  event(e: WatchedEvent): void;
  /** The watch ended: WATCH_COMPACTED when the history after the cursor is gone, UNAVAILABLE otherwise. */
  error(e: KeelsonError): void;
}

/** A running watch. */
export interface MetadataWatch {
  /** Stops the watch. Idempotent. */
  cancel(): Promise<void>;
}

/** What a node's liveness registration reports to. */
export interface RegistrationHandlers {
  /** The liveness lease was lost (partition, store restart): the node looks down until it registers again. */
  lost(error: unknown): void;
  /** This node won the leader election. */
  elected(): void;
  /** The candidacy failed: the node no longer stands for leader until it registers again. */
  campaignFailed(error: unknown): void;
  /** A keepalive of the lease failed; it is retried, and the lease is lost only once its TTL has passed. */
  keepaliveFailed?(error: unknown): void;
}

/** A node's liveness (lease and alive record) and candidacy for leader. */
export interface Registration {
  /** Resigns and gives the lease up, so others see the node go at once. Never fails; idempotent. */
  release(): Promise<void>;
}

/**
 * The cluster's metadata: typed records by kind and id, compare-and-swap
 * transactions, liveness with leader election, and a watch of changes.
 * Records are validated when read: a stored record that is not its kind's
 * shape fails the read with METADATA_CORRUPT naming the key. Every failure
 * to reach the store is UNAVAILABLE (the call may succeed later).
 */
export interface MetadataStore {
  /** Where the store is, for messages (e.g. etcd's endpoints). */
  readonly endpoints: string;
  /** The record, or null when it does not exist. */
  get<K extends RecordKind>(ref: RecordRef<K>): Promise<Versioned<K> | null>;
  /** Every record of `kind` (whose id starts with `idPrefix` when given), in key order; empty when none. */
  list<K extends RecordKind>(kind: K, idPrefix?: string): Promise<Versioned<K>[]>;
  /** Writes the record, creating or replacing it. Idempotent. */
  put<K extends RecordKind>(ref: RecordRef<K>, value: RecordTypes[K]): Promise<void>;
  /** Deletes the record. Idempotent: a record that does not exist is no error. */
  delete(ref: RecordRef): Promise<void>;
  /** Applies the transaction's writes only if all its conditions hold; returns whether it did. Not idempotent. */
  commit(txn: Transaction): Promise<boolean>;
  /**
   * Takes a liveness lease of `ttlS` seconds kept alive automatically, writes
   * the node's alive record under it and stands for leader. A lost lease or
   * a failed campaign is reported; registering again is the caller's call.
   */
  register(nodeId: string, ttlS: number, on: RegistrationHandlers): Promise<Registration>;
  /** The node that holds the leader election now, or undefined when none (or it cannot be learned). */
  leader(): Promise<string | undefined>;
  /** The newest revision of the store's history (where a watch "from now" starts). */
  headRevision(): Promise<number>;
  /**
   * Reports every change after `after`, decoded into events. Changes that
   * decode to no event still count in the cursor's numbering.
   */
  watch(after: WatchCursor, on: WatchHandlers): Promise<MetadataWatch>;
  /** Closes the connection; registrations should be released first. Idempotent. */
  close(): void;
}
