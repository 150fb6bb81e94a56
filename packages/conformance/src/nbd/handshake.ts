// The client side of the fixed newstyle handshake: greeting, client flags,
// NBD_OPT_GO (or NBD_OPT_EXPORT_NAME when the server does not know GO).
// Every length the server sends is checked before anything is read or
// allocated for it.

import { ConformanceError } from "../errors.js";
import {
  CLIENT_FLAG,
  EXPORT_NAME_REPLY_BYTES,
  EXPORT_NAME_REPLY_ZEROES_BYTES,
  GREETING_BYTES,
  HANDSHAKE_FLAG,
  IHAVEOPT,
  INFO_EXPORT,
  INFO_EXPORT_BYTES,
  isOptionError,
  MAX_OPTION_REPLIES,
  MAX_OPTION_REPLY_BYTES,
  NBD_MAGIC,
  OLDSTYLE_MAGIC,
  OPTION,
  OPTION_ERROR_NAMES,
  OPTION_REPLY,
  OPTION_REPLY_HEADER_BYTES,
  OPTION_REPLY_MAGIC_HIGH,
  OPTION_REPLY_MAGIC_LOW,
  readSafeUInt64,
} from "./protocol.js";

/** Exact reads and writes on the handshake's socket. `read` rejects when the socket closes or the deadline passes. */
export interface HandshakeIo {
  read(lengthBytes: number): Promise<Buffer>;
  write(data: Buffer): void;
}

/** What the handshake agreed on. */
export interface NegotiatedExport {
  sizeBytes: number;
  /** NBD transmission flags (TRANSMISSION_FLAG bits). */
  transmissionFlags: number;
  /** Which option entered transmission: GO, or EXPORT_NAME on a server without GO. */
  via: "go" | "export-name";
}

function violation(where: string, what: string): ConformanceError {
  return new ConformanceError({ code: "TARGET_FAILED", message: `NBD server at ${where} broke the handshake: ${what}` });
}

function option(code: number, data: Buffer): Buffer {
  const header = Buffer.allocUnsafe(16);
  IHAVEOPT.copy(header, 0);
  header.writeUInt32BE(code, 8);
  header.writeUInt32BE(data.length, 12);
  return Buffer.concat([header, data]);
}

async function readGreeting(io: HandshakeIo, where: string): Promise<{ noZeroes: boolean }> {
  const greeting = await io.read(GREETING_BYTES);
  if (!greeting.subarray(0, 8).equals(NBD_MAGIC)) {
    throw violation(where, `greeting starts with 0x${greeting.subarray(0, 8).toString("hex")}, not "NBDMAGIC"`);
  }
  const style = greeting.subarray(8, 16);
  if (style.equals(OLDSTYLE_MAGIC)) {
    throw new ConformanceError({
      code: "NOT_SUPPORTED",
      message: `NBD server at ${where} speaks the oldstyle handshake; this client needs fixed newstyle`,
    });
  }
  if (!style.equals(IHAVEOPT))
    throw violation(where, `greeting magic 0x${style.toString("hex")} is neither IHAVEOPT nor oldstyle`);
  const flags = greeting.readUInt16BE(16);
  if ((flags & HANDSHAKE_FLAG.FIXED_NEWSTYLE) === 0) {
    throw new ConformanceError({
      code: "NOT_SUPPORTED",
      message: `NBD server at ${where} does not offer fixed newstyle (handshake flags 0x${flags.toString(16)})`,
    });
  }
  return { noZeroes: (flags & HANDSHAKE_FLAG.NO_ZEROES) !== 0 };
}

interface OptionReply {
  type: number;
  data: Buffer;
}

async function readOptionReply(io: HandshakeIo, where: string, expectedOption: number): Promise<OptionReply> {
  const header = await io.read(OPTION_REPLY_HEADER_BYTES);
  if (header.readUInt32BE(0) !== OPTION_REPLY_MAGIC_HIGH || header.readUInt32BE(4) !== OPTION_REPLY_MAGIC_LOW) {
    throw violation(where, `option reply magic 0x${header.subarray(0, 8).toString("hex")} is not 0x0003e889045565a9`);
  }
  const replyOption = header.readUInt32BE(8);
  if (replyOption !== expectedOption) throw violation(where, `reply is for option ${replyOption}, expected ${expectedOption}`);
  const type = header.readUInt32BE(12);
  const lengthBytes = header.readUInt32BE(16);
  if (lengthBytes > MAX_OPTION_REPLY_BYTES) {
    throw violation(where, `option reply of ${lengthBytes} bytes exceeds the ${MAX_OPTION_REPLY_BYTES} this client accepts`);
  }
  const data = lengthBytes === 0 ? Buffer.alloc(0) : await io.read(lengthBytes);
  return { type, data };
}

/** NBD_OPT_GO; "unsupported" when the server answers NBD_REP_ERR_UNSUP. */
async function optGo(io: HandshakeIo, where: string, name: Buffer): Promise<NegotiatedExport | "unsupported"> {
  // Name length, name, and zero information requests: the server sends NBD_INFO_EXPORT regardless.
  const data = Buffer.alloc(4 + name.length + 2);
  data.writeUInt32BE(name.length, 0);
  name.copy(data, 4);
  io.write(option(OPTION.GO, data));
  let exportInfo: { sizeBytes: number; transmissionFlags: number } | undefined;
  for (let i = 0; i < MAX_OPTION_REPLIES; i++) {
    const reply = await readOptionReply(io, where, OPTION.GO);
    if (reply.type === OPTION_REPLY.INFO && reply.data.length >= 2 && reply.data.readUInt16BE(0) === INFO_EXPORT) {
      if (reply.data.length !== INFO_EXPORT_BYTES)
        throw violation(where, `NBD_INFO_EXPORT of ${reply.data.length} bytes, expected ${INFO_EXPORT_BYTES}`);
      const sizeBytes = readSafeUInt64(reply.data, 2);
      if (sizeBytes === undefined) throw violation(where, "export size does not fit 2^53 bytes");
      exportInfo = { sizeBytes, transmissionFlags: reply.data.readUInt16BE(10) };
    } else if (reply.type === OPTION_REPLY.ACK) {
      if (exportInfo === undefined) throw violation(where, "NBD_OPT_GO acknowledged without NBD_INFO_EXPORT");
      return { ...exportInfo, via: "go" };
    } else if (reply.type === OPTION_REPLY.ERR_UNSUP) {
      return "unsupported";
    } else if (isOptionError(reply.type)) {
      const name = OPTION_ERROR_NAMES[reply.type] ?? `error 0x${reply.type.toString(16)}`;
      const message = reply.data.toString("utf8", 0, Math.min(reply.data.length, 512));
      throw new ConformanceError({
        code: "TARGET_FAILED",
        message: `NBD server at ${where} refused the export: ${name}${message ? ` (${message})` : ""}`,
      });
    }
    // Other informational replies (block size, name, description) are not needed here.
  }
  throw violation(where, `more than ${MAX_OPTION_REPLIES} replies to NBD_OPT_GO`);
}

/** NBD_OPT_EXPORT_NAME: no error reply exists; a server without the export just closes. */
async function optExportName(io: HandshakeIo, where: string, name: Buffer, noZeroes: boolean): Promise<NegotiatedExport> {
  io.write(option(OPTION.EXPORT_NAME, name));
  const reply = await io.read(EXPORT_NAME_REPLY_BYTES + (noZeroes ? 0 : EXPORT_NAME_REPLY_ZEROES_BYTES));
  const sizeBytes = readSafeUInt64(reply, 0);
  if (sizeBytes === undefined) throw violation(where, "export size does not fit 2^53 bytes");
  return { sizeBytes, transmissionFlags: reply.readUInt16BE(8), via: "export-name" };
}

/** Runs the handshake for `exportName`; ConformanceError TARGET_FAILED or NOT_SUPPORTED when it cannot. */
export async function negotiate(io: HandshakeIo, where: string, exportName: string): Promise<NegotiatedExport> {
  const { noZeroes } = await readGreeting(io, where);
  const clientFlags = Buffer.allocUnsafe(4);
  clientFlags.writeUInt32BE(CLIENT_FLAG.FIXED_NEWSTYLE | (noZeroes ? CLIENT_FLAG.NO_ZEROES : 0), 0);
  io.write(clientFlags);
  const name = Buffer.from(exportName, "utf8");
  const viaGo = await optGo(io, where, name);
  return viaGo === "unsupported" ? optExportName(io, where, name, noZeroes) : viaGo;
}
