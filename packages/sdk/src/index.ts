// @keelson/sdk: the semver-stable surface. Anything not exported here is internal.

export type { ClientOptions } from "./client.js";
export {
  backoffDelayMs,
  createClient,
  DEFAULT_CALL_TIMEOUT_MS,
  DEFAULT_MAX_ATTEMPTS,
  DEFAULT_RETRY_BASE_DELAY_MS,
  KeelsonClient,
  MAX_RETRY_DELAY_MS,
} from "./client.js";
export type { ErrorCode, KeelsonErrorOptions } from "./errors.js";
export {
  ERROR_CODE_METADATA_KEY,
  ERROR_CODES,
  fromServiceError,
  GRPC_STATUS_BY_CODE,
  isErrorCode,
  isKeelsonError,
  KeelsonError,
  RETRYABLE_CODES,
  toServiceError,
} from "./errors.js";
export type {
  Attachment,
  AttachVolumeRequest,
  CallOptions,
  ClusterNode,
  CreateSnapshotRequest,
  CreateVolumeRequest,
  DeleteVolumeRequest,
  DeleteVolumeResult,
  DiskCapability,
  FenceVolumeRequest,
  ListSnapshotsRequest,
  NodeInfo,
  Pool,
  QosLimits,
  QosPolicy,
  QosStatus,
  RateLimit,
  ResizeVolumeRequest,
  RevertVolumeRequest,
  SetDiskCapabilityRequest,
  SetVolumeQosRequest,
  Snapshot,
  SnapshotRef,
  Volume,
  VolumeExport,
  VolumeRef,
  VolumeSource,
  VolumeState,
} from "./types.js";
