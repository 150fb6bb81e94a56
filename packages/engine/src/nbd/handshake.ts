import type { Socket } from "node:net";
import tls from "node:tls";
import { isKeelsonError } from "@keelson/sdk";
import createDebug from "debug";
import { messageOf } from "../util/errors.js";
import type { ExportCatalog, NbdExport } from "./export.js";
import {
  BASE_ALLOCATION,
  BASE_ALLOCATION_ID,
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
/** Queries one LIST/SET_META_CONTEXT may carry (each at least 4 bytes of the option's 16 KiB). */
const MAX_META_CONTEXT_QUERIES = 64;

/** Result of a successful handshake. */
export interface HandshakeResult {
  export: NbdExport;
  /** Bytes the client already sent past the handshake (the first requests). */
  leftover: Buffer;
  /** Whether the client negotiated NBD_OPT_STRUCTURED_REPLY. */
  structuredReplies: boolean;
  /** The id of base:allocation when the client selected it for this export (NBD_CMD_BLOCK_STATUS); null otherwise. */
  allocationContextId: number | null;
  /** The socket to serve the export on: the accepted one, or the TLS socket over it after NBD_OPT_STARTTLS. */
  socket: Socket;
}

/**
 * TLS of an NBD listener. With it the listener is in the protocol's "forced TLS" mode: a client must send
 * NBD_OPT_STARTTLS before anything but NBD_OPT_ABORT (other options get NBD_REP_ERR_TLS_REQD, and
 * NBD_OPT_EXPORT_NAME, which cannot be answered with an error, a closed connection).
 */
export interface NbdTls {
  secureContext: tls.SecureContext;
  /** Require a client certificate signed by the context's CA (mutual TLS). */
  requireClientCert: boolean;
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

/** Parses NBD_OPT_LIST_META_CONTEXT / NBD_OPT_SET_META_CONTEXT data: export name and queries; null when malformed. */
function parseMetaContextRequest(data: Buffer): { name: string; queries: string[] } | null {
  if (data.length < 8) return null;
  const nameLen = data.readUInt32BE(0);
  if (nameLen > NAME_MAX_BYTES || 4 + nameLen + 4 > data.length) return null;
  const name = data.toString("utf8", 4, 4 + nameLen);
  const count = data.readUInt32BE(4 + nameLen);
  if (count > MAX_META_CONTEXT_QUERIES) return null;
  const queries: string[] = [];
  let at = 4 + nameLen + 4;
  for (let i = 0; i < count; i++) {
    if (at + 4 > data.length) return null;
    const len = data.readUInt32BE(at);
    if (len > NAME_MAX_BYTES || at + 4 + len > data.length) return null;
    queries.push(data.toString("utf8", at + 4, at + 4 + len));
    at += 4 + len;
  }
  return at === data.length ? { name, queries } : null;
}

/** A META_CONTEXT reply: the context's id and name. */
function metaContextReply(option: number, id: number, name: string): Buffer {
  const n = Buffer.from(name, "utf8");
  const payload = Buffer.alloc(4 + n.length);
  payload.writeUInt32BE(id, 0);
  n.copy(payload, 4);
  return optionReply(option, OptionReply.META_CONTEXT, payload);
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
  /** The connection: the accepted socket, replaced by the TLS socket over it after NBD_OPT_STARTTLS. */
  socket: Socket;
  /** Reads `socket` (replaced with it). */
  reader: SocketReader;
  readonly catalog: ExportCatalog;
  /** This listener's TLS; undefined: plaintext only (NBD_OPT_STARTTLS is refused). */
  readonly tls: NbdTls | undefined;
  /** Set once the connection is on TLS. */
  secured = false;
  noZeroes = false;
  /** Set once the client asked for structured replies (NBD_OPT_STRUCTURED_REPLY) and we acknowledged. */
  structuredReplies = false;
  /** The export the client selected base:allocation for (NBD_OPT_SET_META_CONTEXT); null while none is selected. */
  allocationContextFor: string | null = null;
  /** The export chosen; base:allocation counts only when it is the one the context was selected for. */
  chosenName = "";

  constructor(socket: Socket, catalog: ExportCatalog, tls: NbdTls | undefined) {
    this.socket = socket;
    this.reader = new SocketReader(socket);
    this.catalog = catalog;
    this.tls = tls;
  }

  send(buf: Buffer): void {
    this.socket.write(buf);
  }

  /** The export `name` opened, or null when there is none or it is refused (NBD_OPT_EXPORT_NAME cannot say why). */
  async #open(name: string): Promise<NbdExport | null> {
    try {
      return await this.catalog.open(name);
    } catch (error) {
      debug("export %s refused: %s", name, messageOf(error));
      return null;
    }
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
    return await this.dispatch(option, data);
  }

  async dispatch(option: number, data: Buffer): Promise<NbdExport | "continue" | "abort"> {
    if (option === Option.STARTTLS) return this.startTls(data);
    if (this.tls && !this.secured && option !== Option.ABORT) {
      // Forced TLS: nothing but STARTTLS and ABORT in plaintext. EXPORT_NAME has no error reply: the protocol says close.
      if (option === Option.EXPORT_NAME) return "abort";
      this.send(errorReply(option, OptionReply.ERR_TLS_REQD, "this server requires TLS: send NBD_OPT_STARTTLS first"));
      return "continue";
    }
    switch (option) {
      case Option.EXPORT_NAME:
        return this.exportName(data);
      case Option.ABORT:
        this.send(optionReply(option, OptionReply.ACK));
        return "abort";
      case Option.LIST:
        await this.list(data);
        return "continue";
      case Option.INFO:
      case Option.GO:
        return this.infoOrGo(option, data);
      case Option.STRUCTURED_REPLY:
        this.structuredReply(data);
        return "continue";
      case Option.LIST_META_CONTEXT:
      case Option.SET_META_CONTEXT:
        await this.metaContext(option, data);
        return "continue";
      default:
        this.send(errorReply(option, OptionReply.ERR_UNSUP, `option ${option} is not supported`));
        return "continue";
    }
  }

  /**
   * NBD_OPT_STARTTLS: acknowledged, then the connection is upgraded and negotiation continues on the TLS
   * socket. The client must wait for the acknowledgement before its TLS handshake, so bytes already
   * buffered are a protocol violation (and plaintext that must not be read as if it came over TLS): abort.
   */
  startTls(data: Buffer): "continue" | "abort" {
    if (data.length !== 0) {
      this.send(errorReply(Option.STARTTLS, OptionReply.ERR_INVALID, "NBD_OPT_STARTTLS takes no data"));
      return "continue";
    }
    if (!this.tls) {
      this.send(errorReply(Option.STARTTLS, OptionReply.ERR_POLICY, "TLS is not configured on this listener"));
      return "continue";
    }
    if (this.secured) {
      this.send(errorReply(Option.STARTTLS, OptionReply.ERR_INVALID, "the connection is on TLS already"));
      return "continue";
    }
    this.send(optionReply(Option.STARTTLS, OptionReply.ACK));
    if (this.reader.detach().length > 0) return "abort";
    const secure = new tls.TLSSocket(this.socket, {
      isServer: true,
      secureContext: this.tls.secureContext,
      requestCert: this.tls.requireClientCert,
      rejectUnauthorized: this.tls.requireClientCert,
    });
    // A failed TLS handshake (no or a foreign client certificate) closes the socket, which ends the read below.
    secure.on("error", (e) => debug("TLS error during the handshake: %s", e.message));
    this.socket = secure;
    this.reader = new SocketReader(secure);
    this.secured = true;
    return "continue";
  }

  async exportName(data: Buffer): Promise<NbdExport | "abort"> {
    const exp = await this.#open(data.toString("utf8"));
    // Old-style export selection has no way to report an error: the protocol says close.
    if (!exp) return "abort";
    const reply = Buffer.alloc(this.noZeroes ? 10 : 134);
    reply.writeBigUInt64BE(BigInt(exp.sizeBytes), 0);
    reply.writeUInt16BE(transmissionFlags(exp.readOnly), 8);
    this.send(reply);
    this.chosenName = data.toString("utf8");
    return exp;
  }

  /**
   * NBD_OPT_LIST_META_CONTEXT / NBD_OPT_SET_META_CONTEXT. The one context is
   * base:allocation. LIST with no query, `base:` or `base:allocation` names
   * it, for an export that exists; SET selects it only by its full name and
   * replaces what an earlier SET selected. Both need structured replies
   * first. SET does not ask the catalog whether the export exists: the
   * selection binds to the name and counts only if GO then opens that export,
   * which checks it. Asking here costs a replica's opener a second check
   * against the cluster (etcd) for every replica it opens.
   */
  async metaContext(option: number, data: Buffer): Promise<void> {
    // A SET replaces the selection even when it fails (the protocol says so): clear it before any check.
    if (option === Option.SET_META_CONTEXT) this.allocationContextFor = null;
    if (!this.structuredReplies) {
      this.send(errorReply(option, OptionReply.ERR_INVALID, "meta contexts need NBD_OPT_STRUCTURED_REPLY first"));
      return;
    }
    const req = parseMetaContextRequest(data);
    if (!req) {
      this.send(errorReply(option, OptionReply.ERR_INVALID, "malformed NBD_OPT_LIST/SET_META_CONTEXT data"));
      return;
    }
    if (option === Option.LIST_META_CONTEXT && !(await this.#exists(option, req.name))) return;
    if (option === Option.LIST_META_CONTEXT) {
      const listed = req.queries.length === 0 || req.queries.some((q) => q === "base:" || q === BASE_ALLOCATION);
      if (listed) this.send(metaContextReply(option, 0, BASE_ALLOCATION));
    } else {
      const selected = req.queries.includes(BASE_ALLOCATION);
      this.allocationContextFor = selected ? req.name : null;
      if (selected) this.send(metaContextReply(option, BASE_ALLOCATION_ID, BASE_ALLOCATION));
    }
    this.send(optionReply(option, OptionReply.ACK));
  }

  /** Whether export `name` exists (LIST_META_CONTEXT answers for existing exports only); says why not when not. */
  async #exists(option: number, name: string): Promise<boolean> {
    let info: Awaited<ReturnType<ExportCatalog["describe"]>>;
    try {
      info = await this.catalog.describe(name);
    } catch (error) {
      this.send(errorReply(option, OptionReply.ERR_POLICY, refusalText(error)));
      return false;
    }
    if (!info) this.send(errorReply(option, OptionReply.ERR_UNKNOWN, `export ${JSON.stringify(name)} does not exist`));
    return info !== null;
  }

  /** The context id of base:allocation for the chosen export, or null when it was selected for none or another. */
  get allocationContextId(): number | null {
    return this.allocationContextFor !== null && this.allocationContextFor === this.chosenName ? BASE_ALLOCATION_ID : null;
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

  async list(data: Buffer): Promise<void> {
    if (data.length !== 0) {
      this.send(errorReply(Option.LIST, OptionReply.ERR_INVALID, "NBD_OPT_LIST takes no data"));
      return;
    }
    for (const { name } of await this.catalog.list()) {
      const n = Buffer.from(name, "utf8");
      const payload = Buffer.alloc(4 + n.length);
      payload.writeUInt32BE(n.length, 0);
      n.copy(payload, 4);
      this.send(optionReply(Option.LIST, OptionReply.SERVER, payload));
    }
    this.send(optionReply(Option.LIST, OptionReply.ACK));
  }

  async infoOrGo(option: number, data: Buffer): Promise<NbdExport | "continue"> {
    const req = parseInfoRequest(data);
    if (!req) {
      this.send(errorReply(option, OptionReply.ERR_INVALID, "malformed NBD_OPT_INFO/NBD_OPT_GO data"));
      return "continue";
    }
    let info: Awaited<ReturnType<ExportCatalog["describe"]>>;
    try {
      info = await this.catalog.describe(req.name);
    } catch (error) {
      // A refusal (not this client's export, an epoch etcd does not hold): said, and the client may go on.
      this.send(errorReply(option, OptionReply.ERR_POLICY, refusalText(error)));
      return "continue";
    }
    if (!info) {
      this.send(errorReply(option, OptionReply.ERR_UNKNOWN, `export ${JSON.stringify(req.name)} does not exist`));
      return "continue";
    }
    // Open before replying to GO so that the size we report is the one we serve.
    let exp: NbdExport | null = null;
    try {
      exp = option === Option.GO ? await this.catalog.open(req.name) : null;
    } catch (error) {
      this.send(errorReply(option, OptionReply.ERR_POLICY, refusalText(error)));
      return "continue";
    }
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
    if (exp) this.chosenName = req.name;
    return exp ?? "continue";
  }
}

/** A catalog's refusal as the client reads it: `CODE: why` for a typed error (an engine keeps the code). */
function refusalText(error: unknown): string {
  return isKeelsonError(error) ? `${error.code}: ${error.message}` : messageOf(error);
}

/**
 * Runs fixed-newstyle negotiation on a fresh connection (on TLS after
 * NBD_OPT_STARTTLS; required when `tls` is given). Resolves with the chosen
 * export and the socket to serve it on, or null when the client aborted or the
 * handshake failed (the caller closes the socket).
 */
export async function negotiate(socket: Socket, catalog: ExportCatalog, tls?: NbdTls): Promise<HandshakeResult | null> {
  try {
    return await negotiateOrThrow(socket, catalog, tls);
  } catch (error) {
    debug("handshake ended: %s", messageOf(error));
    return null;
  }
}

/**
 * {@link negotiate} without the catch: a misbehaving client rejects it with
 * HandshakeAborted, and anything else that rejects it is a bug here (the
 * fuzz harness tells the two apart; `negotiate` hides both from the server).
 */
export async function negotiateOrThrow(socket: Socket, catalog: ExportCatalog, tls?: NbdTls): Promise<HandshakeResult | null> {
  const n = new Negotiation(socket, catalog, tls);
  let exp: NbdExport | null;
  try {
    exp = await n.run();
  } catch (error) {
    n.reader.detach();
    if (n.socket !== socket) n.socket.end();
    throw error;
  }
  const leftover = n.reader.detach();
  if (!exp) {
    // On TLS the TLS socket ends the connection, so that its last reply (ABORT's ACK) goes out encrypted first.
    if (n.socket !== socket) n.socket.end();
    return null;
  }
  return {
    export: exp,
    leftover,
    structuredReplies: n.structuredReplies,
    allocationContextId: n.allocationContextId,
    socket: n.socket,
  };
}
