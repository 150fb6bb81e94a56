// Wire constants of the NBD protocol (NetworkBlockDevice/nbd doc/proto.md)
// that this client speaks: fixed newstyle handshake, simple replies only.

/** First 8 bytes of every server greeting. */
export const NBD_MAGIC = Buffer.from("NBDMAGIC", "latin1");
/** Second 8 bytes of a newstyle greeting, and the prefix of every option the client sends. */
export const IHAVEOPT = Buffer.from("IHAVEOPT", "latin1");
/** Second 8 bytes of an oldstyle greeting (which this client does not speak). */
export const OLDSTYLE_MAGIC = Buffer.from([0x00, 0x00, 0x42, 0x02, 0x81, 0x86, 0x12, 0x53]);
/** Option reply magic 0x0003e889045565a9 as its two 32-bit halves, so parsing needs no BigInt. */
export const OPTION_REPLY_MAGIC_HIGH = 0x0003e889;
export const OPTION_REPLY_MAGIC_LOW = 0x045565a9;
export const REQUEST_MAGIC = 0x25609513;
export const SIMPLE_REPLY_MAGIC = 0x67446698;
/** Never negotiated by this client, so seeing it is a protocol violation worth naming. */
export const STRUCTURED_REPLY_MAGIC = 0x668e33ef;

/** Greeting: 8 bytes NBDMAGIC, 8 bytes IHAVEOPT, 16-bit handshake flags. */
export const GREETING_BYTES = 18;
/** Option reply header: 64-bit magic, 32-bit option, 32-bit type, 32-bit length. */
export const OPTION_REPLY_HEADER_BYTES = 20;
/** Request header: magic, flags, type, handle, offset, length. */
export const REQUEST_HEADER_BYTES = 28;
/** Simple reply header: magic, error, handle. */
export const SIMPLE_REPLY_HEADER_BYTES = 16;
/** NBD_OPT_EXPORT_NAME's reply: size and transmission flags, then 124 zero bytes unless NO_ZEROES was agreed. */
export const EXPORT_NAME_REPLY_BYTES = 10;
export const EXPORT_NAME_REPLY_ZEROES_BYTES = 124;

export const HANDSHAKE_FLAG = { FIXED_NEWSTYLE: 1 << 0, NO_ZEROES: 1 << 1 } as const;
export const CLIENT_FLAG = { FIXED_NEWSTYLE: 1 << 0, NO_ZEROES: 1 << 1 } as const;

export const OPTION = {
  EXPORT_NAME: 1,
  ABORT: 2,
  STARTTLS: 5,
  GO: 7,
  STRUCTURED_REPLY: 8,
  EXTENDED_HEADERS: 11,
} as const;

const REP_ERR = 2 ** 31;
export const OPTION_REPLY = {
  ACK: 1,
  INFO: 3,
  ERR_UNSUP: REP_ERR + 1,
} as const;

/** Names of the option error replies, for messages. */
export const OPTION_ERROR_NAMES: Readonly<Record<number, string>> = {
  [REP_ERR + 1]: "NBD_REP_ERR_UNSUP",
  [REP_ERR + 2]: "NBD_REP_ERR_POLICY",
  [REP_ERR + 3]: "NBD_REP_ERR_INVALID",
  [REP_ERR + 4]: "NBD_REP_ERR_PLATFORM",
  [REP_ERR + 5]: "NBD_REP_ERR_TLS_REQD",
  [REP_ERR + 6]: "NBD_REP_ERR_UNKNOWN",
  [REP_ERR + 7]: "NBD_REP_ERR_SHUTDOWN",
  [REP_ERR + 8]: "NBD_REP_ERR_BLOCK_SIZE_REQD",
  [REP_ERR + 9]: "NBD_REP_ERR_TOO_BIG",
  [REP_ERR + 10]: "NBD_REP_ERR_EXT_HEADER_REQD",
};

/** True for option reply types with bit 31 set (errors). */
export function isOptionError(type: number): boolean {
  return type >= REP_ERR;
}

export const INFO_EXPORT = 0;
/** NBD_INFO_EXPORT payload: 16-bit info type, 64-bit size, 16-bit transmission flags. */
export const INFO_EXPORT_BYTES = 12;

export const TRANSMISSION_FLAG = {
  HAS_FLAGS: 1 << 0,
  READ_ONLY: 1 << 1,
  SEND_FLUSH: 1 << 2,
  SEND_FUA: 1 << 3,
  CAN_MULTI_CONN: 1 << 8,
} as const;

export const COMMAND = { READ: 0, WRITE: 1, DISC: 2, FLUSH: 3 } as const;
export type Command = (typeof COMMAND)[keyof typeof COMMAND];
export const COMMAND_FLAG = { FUA: 1 << 0 } as const;

/** NBD error numbers this client produces or reacts to (the protocol uses Linux values). */
export const NBD_ERRNO = { EPERM: 1, EIO: 5, EINVAL: 22, ESHUTDOWN: 108 } as const;

/** Largest read or write this client sends in one request (nbdkit and qemu refuse more than 32 MiB). */
export const MAX_REQUEST_BYTES = 32 * 1024 * 1024;
/** Largest option reply accepted during the handshake; strings in the protocol are at most 4096 bytes. */
export const MAX_OPTION_REPLY_BYTES = 64 * 1024;
/** Option replies accepted for one NBD_OPT_GO before the server is judged to be looping. */
export const MAX_OPTION_REPLIES = 64;
/** Export names longer than this are refused by the protocol. */
export const MAX_EXPORT_NAME_BYTES = 4096;

/** Reads a 64-bit unsigned big-endian integer that must fit a JS number; undefined when it does not. */
export function readSafeUInt64(buf: Buffer, at: number): number | undefined {
  const high = buf.readUInt32BE(at);
  const low = buf.readUInt32BE(at + 4);
  const value = high * 2 ** 32 + low;
  return Number.isSafeInteger(value) ? value : undefined;
}

/** Writes a safe non-negative integer as a 64-bit unsigned big-endian integer. */
export function writeUInt64(buf: Buffer, value: number, at: number): void {
  buf.writeUInt32BE(Math.floor(value / 2 ** 32), at);
  buf.writeUInt32BE(value % 2 ** 32, at + 4);
}
