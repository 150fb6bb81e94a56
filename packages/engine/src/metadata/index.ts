/**
 * Cluster metadata: the key layout, the records and their validation, and
 * the store they live in. The only module that knows etcd.
 */
export { type EtcdClientTls, EtcdMetadataStore, fromEtcdError } from "./etcd-store.js";
export { eventOf, type KeyChange } from "./events.js";
export { KEY_PREFIX, type RecordKind, type RecordRef, refs } from "./keys.js";
export type {
  AttachmentEntry,
  ClusterVolumeRecord,
  DiskRecord,
  EpochHolderRecord,
  LeftoverRecord,
  NodeRecord,
  RecordTypes,
  ReplicaStatusRecord,
  SnapshotRecord,
  SpaceAlertRecord,
  VolumeStatusRecord,
} from "./records.js";
export { defaultMinInSync, minInSyncOf } from "./records.js";
export {
  ALL_OF_REVISION,
  type Condition,
  type MetadataEvent,
  type MetadataStore,
  type MetadataWatch,
  type Put,
  type Registration,
  type RegistrationHandlers,
  type Transaction,
  type Version,
  type Versioned,
  type WatchCursor,
  type WatchedEvent,
  type WatchHandlers,
} from "./store.js";
