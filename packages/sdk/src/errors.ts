import { Metadata, type ServiceError, status } from "@grpc/grpc-js";

/**
 * Every stable keelson error code with the one-line meaning users see in docs.
 * Codes are part of the semver-stable API: add new ones, never rename.
 */
export const ERROR_CODES = {
  INVALID_ARGUMENT: "A request field is malformed or out of its valid range.",
  VOLUME_NOT_FOUND: "No volume with that name exists.",
  SNAPSHOT_NOT_FOUND: "No snapshot with that name exists for that volume.",
  ALREADY_EXISTS: "An object with that name exists with different parameters.",
  VOLUME_IN_USE: "The volume (or snapshot) has open connections; disconnect them or use force.",
  SHRINK_NOT_SUPPORTED: "Volumes can grow but never shrink.",
  NO_SPACE: "The disk pool has no free extent left (thin provisioning exhausted).",
  LIMIT_EXCEEDED:
    "A bounded resource is at its maximum (volumes or snapshots per pool, layers per chain, provisioned size under a pool's over-commit limit).",
  OUT_OF_RANGE: "An I/O request reaches past the end of the volume.",
  READ_ONLY: "The target is read-only.",
  ATTACHED_ELSEWHERE:
    "The volume is attached in a way that excludes this attachment (writable on another node, or read-only where a writer was asked); detach it first.",
  NODE_NOT_FOUND: "No cluster node with that id.",
  PERMISSION_DENIED: "The caller may not do that (a Kubernetes API or RBAC refusal).",
  WATCH_COMPACTED:
    "The events after that cursor are no longer kept (etcd compacted them); read the current state and watch from now.",
  EPOCH_STALE: "The request carries an attachment epoch older than the current one.",
  QOS_ADMISSION_DENIED: "No disk can admit the requested QoS reservation.",
  METADATA_CORRUPT: "The pool's metadata failed its checksum or consistency checks.",
  UNAVAILABLE: "The engine cannot be reached or is shutting down; retry later.",
  DEADLINE_EXCEEDED: "The call did not finish within its deadline.",
  CANCELLED: "The call was cancelled by the caller.",
  INTERNAL: "An unexpected engine failure; the message has the detail.",
} as const;

/** A stable keelson error code. */
export type ErrorCode = keyof typeof ERROR_CODES;

/** Codes after which the same call may succeed unchanged; the client retries only these, and only for idempotent calls. */
export const RETRYABLE_CODES: readonly ErrorCode[] = ["UNAVAILABLE"] as const;

/** The gRPC status that carries each code over the wire (applied only at the gRPC edge). */
export const GRPC_STATUS_BY_CODE: Readonly<Record<ErrorCode, status>> = {
  INVALID_ARGUMENT: status.INVALID_ARGUMENT,
  VOLUME_NOT_FOUND: status.NOT_FOUND,
  SNAPSHOT_NOT_FOUND: status.NOT_FOUND,
  ALREADY_EXISTS: status.ALREADY_EXISTS,
  VOLUME_IN_USE: status.FAILED_PRECONDITION,
  SHRINK_NOT_SUPPORTED: status.INVALID_ARGUMENT,
  NO_SPACE: status.RESOURCE_EXHAUSTED,
  LIMIT_EXCEEDED: status.RESOURCE_EXHAUSTED,
  OUT_OF_RANGE: status.OUT_OF_RANGE,
  READ_ONLY: status.FAILED_PRECONDITION,
  ATTACHED_ELSEWHERE: status.FAILED_PRECONDITION,
  NODE_NOT_FOUND: status.NOT_FOUND,
  PERMISSION_DENIED: status.PERMISSION_DENIED,
  WATCH_COMPACTED: status.OUT_OF_RANGE,
  EPOCH_STALE: status.ABORTED,
  QOS_ADMISSION_DENIED: status.RESOURCE_EXHAUSTED,
  METADATA_CORRUPT: status.DATA_LOSS,
  UNAVAILABLE: status.UNAVAILABLE,
  DEADLINE_EXCEEDED: status.DEADLINE_EXCEEDED,
  CANCELLED: status.CANCELLED,
  INTERNAL: status.INTERNAL,
};

/** Trailing-metadata key that carries the keelson code next to the gRPC status. */
export const ERROR_CODE_METADATA_KEY = "keelson-code";

/** Options of a {@link KeelsonError}. */
export interface KeelsonErrorOptions {
  code: ErrorCode;
  message: string;
  cause?: unknown;
}

/**
 * The one error class of keelson. `code` is stable and safe to branch on;
 * `message` is for humans and names the bad value.
 *
 * @example
 * try { await client.getVolume({ name: "pg-data" }); }
 * catch (e) { if (isKeelsonError(e, "VOLUME_NOT_FOUND")) { ... } }
 */
export class KeelsonError extends Error {
  /** The stable error code. */
  readonly code: ErrorCode;

  constructor(options: KeelsonErrorOptions) {
    super(options.message, options.cause === undefined ? undefined : { cause: options.cause });
    this.name = "KeelsonError";
    this.code = options.code;
  }

  /** Whether retrying the same idempotent call may succeed. */
  get retryable(): boolean {
    return RETRYABLE_CODES.includes(this.code);
  }
}

/**
 * True when `value` is a KeelsonError, and (when given) has that code.
 *
 * @example
 * try { await client.getVolume({ name: "x" }); } catch (e) { if (isKeelsonError(e, "VOLUME_NOT_FOUND")) create(); }
 */
export function isKeelsonError(value: unknown, code?: ErrorCode): value is KeelsonError {
  return value instanceof KeelsonError && (code === undefined || value.code === code);
}

/**
 * True when `value` is one of the stable codes.
 *
 * @example
 * if (isErrorCode(header)) console.log(ERROR_CODES[header]);
 */
export function isErrorCode(value: unknown): value is ErrorCode {
  return typeof value === "string" && Object.hasOwn(ERROR_CODES, value);
}

const CODE_BY_GRPC_STATUS: Partial<Record<status, ErrorCode>> = {
  [status.INVALID_ARGUMENT]: "INVALID_ARGUMENT",
  [status.NOT_FOUND]: "VOLUME_NOT_FOUND",
  [status.ALREADY_EXISTS]: "ALREADY_EXISTS",
  [status.RESOURCE_EXHAUSTED]: "NO_SPACE",
  [status.OUT_OF_RANGE]: "OUT_OF_RANGE",
  [status.ABORTED]: "EPOCH_STALE",
  [status.DATA_LOSS]: "METADATA_CORRUPT",
  [status.UNAVAILABLE]: "UNAVAILABLE",
  [status.DEADLINE_EXCEEDED]: "DEADLINE_EXCEEDED",
  [status.CANCELLED]: "CANCELLED",
};

/**
 * Turns a gRPC ServiceError into a KeelsonError, keeping the gRPC error as
 * `cause`. The keelson code comes from trailing metadata; a server that sent
 * none (a proxy, an old engine) gets the closest code for its status.
 *
 * @example
 * rawClient.getVolume(req, (err, res) => { if (err) throw fromServiceError(err); });
 */
export function fromServiceError(error: ServiceError): KeelsonError {
  const sent = error.metadata?.get(ERROR_CODE_METADATA_KEY)[0];
  const code: ErrorCode = isErrorCode(sent) ? sent : (CODE_BY_GRPC_STATUS[error.code] ?? "INTERNAL");
  return new KeelsonError({ code, message: error.details || error.message, cause: error });
}

/**
 * The gRPC error object a server sends for `error` (the server side of {@link fromServiceError}).
 *
 * @example
 * callback(toServiceError(new KeelsonError({ code: "VOLUME_NOT_FOUND", message: "no volume x" })), null);
 */
export function toServiceError(error: KeelsonError): Partial<ServiceError> {
  const metadata = new Metadata();
  metadata.set(ERROR_CODE_METADATA_KEY, error.code);
  return { code: GRPC_STATUS_BY_CODE[error.code], details: error.message, metadata };
}
