import type { ErrorCode } from "@keelson/sdk";
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
