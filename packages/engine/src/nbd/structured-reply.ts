import { type ErrorCode, isErrorCode } from "@keelson/sdk";

// Structured replies (NBD_OPT_STRUCTURED_REPLY, NetworkBlockDevice/nbd doc/proto.md): a reply is one or more
// chunks, each with a 20-byte header; the last one carries the DONE flag. Keelson sends one chunk per reply:
// OFFSET_DATA (reads), NONE (other commands) or ERROR (any failure, with a message naming the keelson code).

export const STRUCTURED_REPLY_MAGIC = 0x668e33ef;
export const CHUNK_HEADER_BYTES = 20;
/** Bytes between a chunk header and the data of an OFFSET_DATA chunk (the 64-bit offset). */
export const OFFSET_DATA_PREFIX_BYTES = 8;
/** An OFFSET_HOLE chunk's payload: the 64-bit offset and the 32-bit hole size. */
export const OFFSET_HOLE_PAYLOAD_BYTES = 12;
/** Error chunks start with the errno (32 bits) and the message length (16 bits). */
export const ERROR_PREFIX_BYTES = 6;
/** The protocol's limit on a string, error messages included. */
export const MAX_ERROR_MESSAGE_BYTES = 4096;

export const ReplyFlag = { DONE: 1 << 0 } as const;

const ERROR_TYPE_BIT = 1 << 15;
export const ReplyType = {
  NONE: 0,
  OFFSET_DATA: 1,
  OFFSET_HOLE: 2,
  BLOCK_STATUS: 5,
  ERROR: ERROR_TYPE_BIT + 1,
  ERROR_OFFSET: ERROR_TYPE_BIT + 2,
} as const;

/** True for every error chunk type, known or not (the protocol marks them all with bit 15). */
export function isErrorChunk(type: number): boolean {
  return (type & ERROR_TYPE_BIT) !== 0;
}

/** Writes a chunk header at `at`; `handleHi`/`handleLo` are the request's handle as the client sent it. */
export function writeChunkHeader(
  buf: Buffer,
  at: number,
  flags: number,
  type: number,
  handleHi: number,
  handleLo: number,
  payloadBytes: number,
): void {
  buf.writeUInt32BE(STRUCTURED_REPLY_MAGIC, at);
  buf.writeUInt16BE(flags, at + 4);
  buf.writeUInt16BE(type, at + 6);
  buf.writeUInt32BE(handleHi, at + 8);
  buf.writeUInt32BE(handleLo, at + 12);
  buf.writeUInt32BE(payloadBytes, at + 16);
}

/**
 * The message of an error chunk: `CODE: detail`. The code comes first so that
 * a keelson peer can read it back (`parseErrorMessage`) and a human reading a
 * libnbd or qemu error sees why.
 */
export function formatErrorMessage(code: ErrorCode, detail: string): string {
  return `${code}: ${detail}`;
}

/** The keelson code an error message starts with, or null when it names none (another server, or no message). */
export function parseErrorMessage(message: string): ErrorCode | null {
  const colon = message.indexOf(":");
  if (colon <= 0) return null;
  const code = message.slice(0, colon);
  return isErrorCode(code) ? code : null;
}

/** UTF-8 bytes of `message`, cut at a character boundary to the protocol's string limit. */
function messageBytes(message: string): Buffer {
  const bytes = Buffer.from(message, "utf8");
  if (bytes.length <= MAX_ERROR_MESSAGE_BYTES) return bytes;
  let end = MAX_ERROR_MESSAGE_BYTES;
  // Back up over continuation bytes (10xxxxxx) so no character is cut in half.
  while (end > 0 && ((bytes[end] as number) & 0xc0) === 0x80) end--;
  return bytes.subarray(0, end);
}

/** A complete NBD_REPLY_TYPE_ERROR chunk with the DONE flag: errno (non-zero) and `CODE: detail`. */
export function errorChunk(handleHi: number, handleLo: number, errno: number, code: ErrorCode, detail: string): Buffer {
  const text = messageBytes(formatErrorMessage(code, detail));
  const payloadBytes = ERROR_PREFIX_BYTES + text.length;
  const buf = Buffer.allocUnsafe(CHUNK_HEADER_BYTES + payloadBytes);
  writeChunkHeader(buf, 0, ReplyFlag.DONE, ReplyType.ERROR, handleHi, handleLo, payloadBytes);
  buf.writeUInt32BE(errno, CHUNK_HEADER_BYTES);
  buf.writeUInt16BE(text.length, CHUNK_HEADER_BYTES + 4);
  text.copy(buf, CHUNK_HEADER_BYTES + ERROR_PREFIX_BYTES);
  return buf;
}

/** The fields of an error chunk's payload; null when the payload is too short for what it claims. */
export function parseErrorPayload(payload: Buffer): { errno: number; message: string } | null {
  if (payload.length < ERROR_PREFIX_BYTES) return null;
  const errno = payload.readUInt32BE(0);
  const messageLength = payload.readUInt16BE(4);
  if (ERROR_PREFIX_BYTES + messageLength > payload.length) return null;
  return { errno, message: payload.toString("utf8", ERROR_PREFIX_BYTES, ERROR_PREFIX_BYTES + messageLength) };
}
