// @keelson/sdk: the semver-stable surface. Anything not exported here is internal.
export {
  KeelsonClient,
  createClient,
  backoffDelayMs,
  DEFAULT_CALL_TIMEOUT_MS,
  DEFAULT_MAX_ATTEMPTS,
  DEFAULT_RETRY_BASE_DELAY_MS,
  MAX_RETRY_DELAY_MS,
} from "./client.js";
export type { ClientOptions } from "./client.js";
export {
  KeelsonError,
  ERROR_CODES,
  RETRYABLE_CODES,
  GRPC_STATUS_BY_CODE,
  ERROR_CODE_METADATA_KEY,
  isKeelsonError,
  isErrorCode,
  fromServiceError,
  toServiceError,
} from "./errors.js";
export type { ErrorCode, KeelsonErrorOptions } from "./errors.js";
export type {
  CallOptions,
  CreateVolumeRequest,
  DeleteVolumeRequest,
  DeleteVolumeResult,
  NodeInfo,
  Pool,
  ResizeVolumeRequest,
  Volume,
  VolumeExport,
  VolumeRef,
  VolumeState,
} from "./types.js";
