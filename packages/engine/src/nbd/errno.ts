import { type ErrorCode, isErrorCode, isKeelsonError, KeelsonError } from "@keelson/sdk";
import { messageOf } from "../util/errors.js";
import { Errno } from "./protocol.js";

/** The NBD error each keelson code becomes on the wire (applied only in the NBD transmission phase). */
export const NBD_ERRNO_BY_CODE: Readonly<Record<ErrorCode, Errno>> = {
  INVALID_ARGUMENT: Errno.EINVAL,
  VOLUME_NOT_FOUND: Errno.EIO,
  SNAPSHOT_NOT_FOUND: Errno.EIO,
  ALREADY_EXISTS: Errno.EINVAL,
  VOLUME_IN_USE: Errno.EIO,
  SHRINK_NOT_SUPPORTED: Errno.EINVAL,
  NO_SPACE: Errno.ENOSPC,
  LIMIT_EXCEEDED: Errno.ENOSPC,
  OUT_OF_RANGE: Errno.EINVAL,
  READ_ONLY: Errno.EPERM,
  ATTACHED_ELSEWHERE: Errno.EPERM,
  NODE_NOT_FOUND: Errno.EIO,
  WATCH_COMPACTED: Errno.EIO,
  PERMISSION_DENIED: Errno.EPERM,
  EPOCH_STALE: Errno.EPERM,
  QOS_ADMISSION_DENIED: Errno.ENOSPC,
  METADATA_CORRUPT: Errno.EIO,
  UNAVAILABLE: Errno.ESHUTDOWN,
  DEADLINE_EXCEEDED: Errno.EIO,
  CANCELLED: Errno.EIO,
  INTERNAL: Errno.EIO,
};

/**
 * The errno a failed request is answered with: the table's, and EIO for a
 * code it lacks. Never 0: on the wire 0 means success.
 */
export function errnoOf(code: ErrorCode): Errno {
  const errno: number = NBD_ERRNO_BY_CODE[code] ?? Errno.EIO;
  return errno === 0 ? Errno.EIO : (errno as Errno);
}

/** Any failure as a typed error: a KeelsonError as it is, anything else INTERNAL (its message kept). */
export function asWireError(error: unknown): KeelsonError {
  if (isKeelsonError(error)) return error;
  // A KeelsonError of another copy of the SDK keeps its code.
  const code = (error as { code?: unknown } | null)?.code;
  if (error instanceof Error && isErrorCode(code)) return new KeelsonError({ code, message: error.message, cause: error });
  return new KeelsonError({ code: "INTERNAL", message: `unexpected failure: ${messageOf(error)}`, cause: error });
}
