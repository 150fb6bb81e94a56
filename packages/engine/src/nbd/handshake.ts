import type { Socket } from "node:net";
import createDebug from "debug";
import { messageOf } from "../util/errors.js";
import type { ExportCatalog, NbdExport } from "./export.js";
import {
  ClientFlag,
  HandshakeFlag,
  IHAVEOPT,
  Info,
  MAX_REQUEST_BYTES,
  MIN_BLOCK_BYTES,
  NBDMAGIC,
  OPTION_REPLY_MAGIC,
  Option,
  OptionReply,
  PREFERRED_BLOCK_BYTES,
  TransmissionFlag,
} from "./protocol.js";
import { HandshakeAborted, SocketReader } from "./socket-reader.js";

const debug = createDebug("keelson:nbd");

/** Options a client may send before it picks an export. */
export const MAX_OPTIONS_PER_CONNECTION = 256;
/** Longest option payload we read; longer ones get ERR_TOO_BIG (up to the drain limit) or a closed connection. */
export const MAX_OPTION_BYTES = 16 * 1024;
const MAX_OPTION_DRAIN_BYTES = 1024 * 1024;
const NAME_MAX_BYTES = 4096;

/** Result of a successful handshake. */
export interface HandshakeResult {
  export: NbdExport;
  /** Bytes the client already sent past the handshake (the first requests). */
  leftover: Buffer;
  /** Whether the client negotiated NBD_OPT_STRUCTURED_REPLY. */
  structuredReplies: boolean;
}

function transmissionFlags(readOnly: boolean): number {
  const common =
    TransmissionFlag.HAS_FLAGS | TransmissionFlag.SEND_FLUSH | TransmissionFlag.SEND_FUA | TransmissionFlag.CAN_MULTI_CONN;
  if (readOnly) return common | TransmissionFlag.READ_ONLY;
  return common | TransmissionFlag.SEND_TRIM | TransmissionFlag.SEND_WRITE_ZEROES | TransmissionFlag.SEND_FAST_ZERO;
}

function optionReply(option: number, type: number, data: Buffer = Buffer.alloc(0)): Buffer {
  const out = Buffer.alloc(20 + data.length);
  out.writeBigUInt64BE(OPTION_REPLY_MAGIC, 0);
  out.writeUInt32BE(option, 8);
  out.writeUInt32BE(type, 12);
  out.writeUInt32BE(data.length, 16);
  data.copy(out, 20);
  return out;
}

function errorReply(option: number, type: number, message: string): Buffer {
  return optionReply(option, type, Buffer.from(message, "utf8"));
}

function infoExport(sizeBytes: number, readOnly: boolean): Buffer {
  const b = Buffer.alloc(12);
  b.writeUInt16BE(Info.EXPORT, 0);
  b.writeBigUInt64BE(BigInt(sizeBytes), 2);
  b.writeUInt16BE(transmissionFlags(readOnly), 10);
  return b;
}

function infoBlockSize(): Buffer {
  const b = Buffer.alloc(14);
  b.writeUInt16BE(Info.BLOCK_SIZE, 0);
  b.writeUInt32BE(MIN_BLOCK_BYTES, 2);
  b.writeUInt32BE(PREFERRED_BLOCK_BYTES, 6);
  b.writeUInt32BE(MAX_REQUEST_BYTES, 10);
  return b;
}

function infoString(type: number, text: string): Buffer {
  const s = Buffer.from(text, "utf8");
  const b = Buffer.alloc(2 + s.length);
  b.writeUInt16BE(type, 0);
  s.copy(b, 2);
  return b;
}

/** Parses NBD_OPT_INFO / NBD_OPT_GO data: name and requested info types; null when malformed. */
function parseInfoRequest(data: Buffer): { name: string; requests: number[] } | null {
  if (data.length < 6) return null;
  const nameLen = data.readUInt32BE(0);
  if (nameLen > NAME_MAX_BYTES || 4 + nameLen + 2 > data.length) return null;
  const name = data.toString("utf8", 4, 4 + nameLen);
  const count = data.readUInt16BE(4 + nameLen);
  if (data.length !== 4 + nameLen + 2 + 2 * count) return null;
  const requests: number[] = [];
  for (let i = 0; i < count; i++) requests.push(data.readUInt16BE(4 + nameLen + 2 + 2 * i));
  return { name, requests };
}

class Negotiation {
  readonly socket: Socket;
  readonly reader: SocketReader;
  readonly catalog: ExportCatalog;
  noZeroes = false;
  /** Set once the client asked for structured replies (NBD_OPT_STRUCTURED_REPLY) and we acknowledged. */
  structuredReplies = false;

  constructor(socket: Socket, catalog: ExportCatalog) {
    this.socket = socket;
    this.reader = new SocketReader(socket);
    this.catalog = catalog;
  }

  send(buf: Buffer): void {
    this.socket.write(buf);
  }

  async run(): Promise<NbdExport | null> {
    const greeting = Buffer.alloc(18);
    NBDMAGIC.copy(greeting, 0);
    IHAVEOPT.copy(greeting, 8);
    greeting.writeUInt16BE(HandshakeFlag.FIXED_NEWSTYLE | HandshakeFlag.NO_ZEROES, 16);
    this.send(greeting);
    const clientFlags = (await this.reader.read(4)).readUInt32BE(0);
    if ((clientFlags & ~(ClientFlag.FIXED_NEWSTYLE | ClientFlag.NO_ZEROES)) !== 0) {
      throw new HandshakeAborted(`unknown client flags 0x${clientFlags.toString(16)}`);
    }
    this.noZeroes = (clientFlags & ClientFlag.NO_ZEROES) !== 0;
    for (let n = 0; n < MAX_OPTIONS_PER_CONNECTION; n++) {
      const result = await this.option();
      if (result === "abort") return null;
      if (result !== "continue") return result;
    }
    throw new HandshakeAborted(`more than ${MAX_OPTIONS_PER_CONNECTION} options`);
  }

  async option(): Promise<NbdExport | "continue" | "abort"> {
    const head = await this.reader.read(16);
    if (!head.subarray(0, 8).equals(IHAVEOPT)) throw new HandshakeAborted("bad option magic");
    const option = head.readUInt32BE(8);
    const length = head.readUInt32BE(12);
    if (length > MAX_OPTION_BYTES) {
      if (length > MAX_OPTION_DRAIN_BYTES || option === Option.EXPORT_NAME)
        throw new HandshakeAborted(`option of ${length} bytes`);
      await this.reader.read(length);
      this.send(errorReply(option, OptionReply.ERR_TOO_BIG, `option data of ${length} bytes exceeds ${MAX_OPTION_BYTES}`));
      return "continue";
    }
    const data = length > 0 ? await this.reader.read(length) : Buffer.alloc(0);
    debug("option %d (%d bytes)", option, length);
    return this.dispatch(option, data);
  }

  dispatch(option: number, data: Buffer): NbdExport | "continue" | "abort" {
    switch (option) {
      case Option.EXPORT_NAME:
        return this.exportName(data);
      case Option.ABORT:
        this.send(optionReply(option, OptionReply.ACK));
        return "abort";
      case Option.LIST:
        this.list(data);
        return "continue";
      case Option.INFO:
      case Option.GO:
        return this.infoOrGo(option, data);
      case Option.STRUCTURED_REPLY:
        this.structuredReply(data);
        return "continue";
      default:
        this.send(errorReply(option, OptionReply.ERR_UNSUP, `option ${option} is not supported`));
        return "continue";
    }
  }

  exportName(data: Buffer): NbdExport | "abort" {
    const exp = this.catalog.open(data.toString("utf8"));
    // Old-style export selection has no way to report an error: the protocol says close.
    if (!exp) return "abort";
    const reply = Buffer.alloc(this.noZeroes ? 10 : 134);
    reply.writeBigUInt64BE(BigInt(exp.sizeBytes), 0);
    reply.writeUInt16BE(transmissionFlags(exp.readOnly), 8);
    this.send(reply);
    return exp;
  }

  /** NBD_OPT_STRUCTURED_REPLY takes no data; asking twice is acknowledged twice (the setting just stays on). */
  structuredReply(data: Buffer): void {
    if (data.length !== 0) {
      this.send(errorReply(Option.STRUCTURED_REPLY, OptionReply.ERR_INVALID, "NBD_OPT_STRUCTURED_REPLY takes no data"));
      return;
    }
    this.structuredReplies = true;
    this.send(optionReply(Option.STRUCTURED_REPLY, OptionReply.ACK));
  }

  list(data: Buffer): void {
    if (data.length !== 0) {
      this.send(errorReply(Option.LIST, OptionReply.ERR_INVALID, "NBD_OPT_LIST takes no data"));
      return;
    }
    for (const { name } of this.catalog.list()) {
      const n = Buffer.from(name, "utf8");
      const payload = Buffer.alloc(4 + n.length);
      payload.writeUInt32BE(n.length, 0);
      n.copy(payload, 4);
      this.send(optionReply(Option.LIST, OptionReply.SERVER, payload));
    }
    this.send(optionReply(Option.LIST, OptionReply.ACK));
  }

  infoOrGo(option: number, data: Buffer): NbdExport | "continue" {
    const req = parseInfoRequest(data);
    if (!req) {
      this.send(errorReply(option, OptionReply.ERR_INVALID, "malformed NBD_OPT_INFO/NBD_OPT_GO data"));
      return "continue";
    }
    const info = this.catalog.describe(req.name);
    if (!info) {
      this.send(errorReply(option, OptionReply.ERR_UNKNOWN, `export ${JSON.stringify(req.name)} does not exist`));
      return "continue";
    }
    // Open before replying to GO so that the size we report is the one we serve.
    const exp = option === Option.GO ? this.catalog.open(req.name) : null;
    if (option === Option.GO && !exp) {
      this.send(errorReply(option, OptionReply.ERR_UNKNOWN, `export ${JSON.stringify(req.name)} does not exist`));
      return "continue";
    }
    const sizeBytes = exp ? exp.sizeBytes : info.sizeBytes;
    this.send(optionReply(option, OptionReply.INFO, infoExport(sizeBytes, info.readOnly)));
    if (req.requests.includes(Info.BLOCK_SIZE)) this.send(optionReply(option, OptionReply.INFO, infoBlockSize()));
    if (req.requests.includes(Info.NAME)) this.send(optionReply(option, OptionReply.INFO, infoString(Info.NAME, req.name)));
    if (req.requests.includes(Info.DESCRIPTION)) {
      this.send(optionReply(option, OptionReply.INFO, infoString(Info.DESCRIPTION, info.description)));
    }
    this.send(optionReply(option, OptionReply.ACK));
    return exp ?? "continue";
  }
}

/**
 * Runs fixed-newstyle negotiation on a fresh connection. Resolves with the
 * chosen export, or null when the client aborted or the handshake failed (the
 * caller closes the socket).
 */
export async function negotiate(socket: Socket, catalog: ExportCatalog): Promise<HandshakeResult | null> {
  const n = new Negotiation(socket, catalog);
  try {
    const exp = await n.run();
    const leftover = n.reader.detach();
    if (!exp) return null;
    return { export: exp, leftover, structuredReplies: n.structuredReplies };
  } catch (error) {
    n.reader.detach();
    debug("handshake ended: %s", messageOf(error));
    return null;
  }
}
