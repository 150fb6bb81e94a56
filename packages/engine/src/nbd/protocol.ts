// Constants of the NBD protocol (NetworkBlockDevice/nbd doc/proto.md), fixed newstyle only.

export const NBDMAGIC = Buffer.from("NBDMAGIC", "ascii");
export const IHAVEOPT = Buffer.from("IHAVEOPT", "ascii");
export const OPTION_REPLY_MAGIC = 0x3e889045565a9n;
export const REQUEST_MAGIC = 0x25609513;
export const SIMPLE_REPLY_MAGIC = 0x67446698;

export const HandshakeFlag = { FIXED_NEWSTYLE: 1 << 0, NO_ZEROES: 1 << 1 } as const;
export const ClientFlag = { FIXED_NEWSTYLE: 1 << 0, NO_ZEROES: 1 << 1 } as const;

export const Option = {
  EXPORT_NAME: 1,
  ABORT: 2,
  LIST: 3,
  PEEK_EXPORT: 4,
  STARTTLS: 5,
  INFO: 6,
  GO: 7,
  STRUCTURED_REPLY: 8,
  LIST_META_CONTEXT: 9,
  SET_META_CONTEXT: 10,
  EXTENDED_HEADERS: 11,
} as const;

const ERR = 2 ** 31;
export const OptionReply = {
  ACK: 1,
  SERVER: 2,
  INFO: 3,
  META_CONTEXT: 4,
  ERR_UNSUP: ERR + 1,
  ERR_POLICY: ERR + 2,
  ERR_INVALID: ERR + 3,
  ERR_PLATFORM: ERR + 4,
  ERR_TLS_REQD: ERR + 5,
  ERR_UNKNOWN: ERR + 6,
  ERR_SHUTDOWN: ERR + 7,
  ERR_BLOCK_SIZE_REQD: ERR + 8,
  ERR_TOO_BIG: ERR + 9,
} as const;

export const Info = { EXPORT: 0, NAME: 1, DESCRIPTION: 2, BLOCK_SIZE: 3 } as const;

export const TransmissionFlag = {
  HAS_FLAGS: 1 << 0,
  READ_ONLY: 1 << 1,
  SEND_FLUSH: 1 << 2,
  SEND_FUA: 1 << 3,
  ROTATIONAL: 1 << 4,
  SEND_TRIM: 1 << 5,
  SEND_WRITE_ZEROES: 1 << 6,
  SEND_DF: 1 << 7,
  CAN_MULTI_CONN: 1 << 8,
  SEND_RESIZE: 1 << 9,
  SEND_CACHE: 1 << 10,
  SEND_FAST_ZERO: 1 << 11,
} as const;

export const Command = {
  READ: 0,
  WRITE: 1,
  DISC: 2,
  FLUSH: 3,
  TRIM: 4,
  CACHE: 5,
  WRITE_ZEROES: 6,
  BLOCK_STATUS: 7,
  RESIZE: 8,
  /**
   * keelson's replica protocol, not the NBD standard's: a frontend saves its
   * write-intent log on a replica (payload like WRITE's, offset 0, no
   * flags). Served only by exports that keep one (a replica under an epoch);
   * any other export refuses it as an unknown command.
   */
  KEELSON_ACTIVITY: 0x4b41,
} as const;

/** Largest payload of a KEELSON_ACTIVITY request (the export checks its content). */
export const MAX_ACTIVITY_PAYLOAD_BYTES = 128 * 1024;

/** The one metadata context served: which blocks hold data (NBD_CMD_BLOCK_STATUS). */
export const BASE_ALLOCATION = "base:allocation";
/** The id this server gives base:allocation when a client selects it (any non-reserved number would do). */
export const BASE_ALLOCATION_ID = 1;
/** base:allocation's status bits: the block takes no space (HOLE) and reads as zeros (ZERO). */
export const AllocationState = { HOLE: 1 << 0, ZERO: 1 << 1 } as const;
/** Descriptors one BLOCK_STATUS reply holds at most (8 bytes each); a client asks again from where they end. */
export const MAX_BLOCK_STATUS_DESCRIPTORS = 2048;

export const CommandFlag = { FUA: 1 << 0, NO_HOLE: 1 << 1, DF: 1 << 2, REQ_ONE: 1 << 3, FAST_ZERO: 1 << 4 } as const;

/** Error values allowed on the wire. */
export const Errno = {
  EPERM: 1,
  EIO: 5,
  ENOMEM: 12,
  EINVAL: 22,
  ENOSPC: 28,
  EOVERFLOW: 75,
  ENOTSUP: 95,
  ESHUTDOWN: 108,
} as const;
export type Errno = (typeof Errno)[keyof typeof Errno];

export const REQUEST_HEADER_BYTES = 28;
export const SIMPLE_REPLY_HEADER_BYTES = 16;

/** Block-size constraints we advertise: any alignment works (sub-block writes are read-modify-write). */
export const MIN_BLOCK_BYTES = 1;
export const PREFERRED_BLOCK_BYTES = 4096;
/** Largest READ or WRITE payload served; larger requests get EINVAL. */
export const MAX_REQUEST_BYTES = 32 * 1024 * 1024;
