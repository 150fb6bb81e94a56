// A deliberately broken NBD proxy for negative tests: it relays the
// handshake byte for byte to an upstream server, then, in transmission,
// breaks the data path as told: it answers every Nth WRITE with success
// without forwarding it (storage that "acknowledges" writes it never stored,
// which the ledger check must catch), and/or holds every reply back for a
// fixed time (storage that answers every request slowly, which the latency
// checks must catch).
//
// It parses both directions (whole messages are relayed, never fragments) so
// that its fake replies land between the server's replies. It speaks fixed
// newstyle with simple replies: a client asking for TLS, structured replies
// or extended headers is told NBD_REP_ERR_UNSUP by the proxy itself (the
// server never sees the option), so clients that ask first and settle for
// simple replies, like libnbd under fio, get through.

import fs from "node:fs";
import net from "node:net";
import { ConformanceError } from "../errors.js";
import { ByteQueue } from "../nbd/byte-queue.js";
import {
  CLIENT_FLAG,
  COMMAND,
  EXPORT_NAME_REPLY_BYTES,
  EXPORT_NAME_REPLY_ZEROES_BYTES,
  GREETING_BYTES,
  HANDSHAKE_FLAG,
  IHAVEOPT,
  MAX_OPTION_REPLY_BYTES,
  MAX_REQUEST_BYTES,
  OPTION,
  OPTION_REPLY,
  OPTION_REPLY_HEADER_BYTES,
  OPTION_REPLY_MAGIC_HIGH,
  OPTION_REPLY_MAGIC_LOW,
  REQUEST_HEADER_BYTES,
  REQUEST_MAGIC,
  SIMPLE_REPLY_HEADER_BYTES,
  SIMPLE_REPLY_MAGIC,
} from "../nbd/protocol.js";
import { formatNbdUri, type NbdAddress, parseNbdUri } from "../nbd/uri.js";

/** Every this-many-th write is acknowledged without being forwarded, unless told otherwise. */
export const DEFAULT_DROP_EVERY_NTH_WRITE = 100;
/** Longest reply delay accepted: a minute is already far past any latency bound. */
export const MAX_REPLY_DELAY_MS = 60_000;
/** Bytes one direction may buffer: one whole write request plus slack. */
const MAX_BUFFERED_BYTES = MAX_REQUEST_BYTES + 1024 * 1024;
const OPTION_HEADER_BYTES = 16;
const UNSUPPORTED_OPTIONS: ReadonlySet<number> = new Set([OPTION.STARTTLS, OPTION.STRUCTURED_REPLY, OPTION.EXTENDED_HEADERS]);

/** Options of {@link LossyNbdProxy.start}. */
export interface LossyNbdProxyOptions {
  /** The real server (nbd:// or nbd+unix://); its export name is used for the proxy's URI too. */
  upstreamUri: string;
  /** Unix socket the proxy listens on; a stale file there is removed first. */
  socketPath: string;
  /** Drop every Nth write (counted over all connections); 0 drops none. Default DEFAULT_DROP_EVERY_NTH_WRITE. */
  dropEveryNthWrite?: number;
  /**
   * Hold every transmission reply (the proxy's own fake ones too) back this
   * many ms before the client gets it, in the order they came. 0 (the
   * default) relays them at once.
   */
  delayEveryReplyMs?: number;
}

function connectUpstream(address: NbdAddress): net.Socket {
  return address.transport === "unix"
    ? net.connect({ path: address.socketPath })
    : net.connect({ host: address.host, port: address.port });
}

/** An option reply of `type` with no data, from the proxy itself. */
function optionReply(option: number, type: number): Buffer {
  const reply = Buffer.alloc(OPTION_REPLY_HEADER_BYTES);
  reply.writeUInt32BE(OPTION_REPLY_MAGIC_HIGH, 0);
  reply.writeUInt32BE(OPTION_REPLY_MAGIC_LOW, 4);
  reply.writeUInt32BE(option, 8);
  reply.writeUInt32BE(type, 12);
  reply.writeUInt32BE(0, 16);
  return reply;
}

/** One client connection and its upstream twin. */
class ProxiedConnection {
  readonly #client: net.Socket;
  readonly #upstream: net.Socket;
  readonly #fromClient = new ByteQueue();
  readonly #fromServer = new ByteQueue();
  readonly #shouldDrop: () => boolean;
  /** Ms every transmission reply is held back; 0 relays at once. */
  readonly #delayMs: number;
  /** Replies held back and not yet written, so that destroy() can drop them. */
  readonly #held = new Set<NodeJS.Timeout>();
  #transmission = false;
  #greetingSeen = false;
  #clientFlagsSeen = false;
  #serverNoZeroes = false;
  #clientNoZeroes = false;
  /** The client sent NBD_OPT_EXPORT_NAME: the server's next message is its fixed-size reply. */
  #awaitingExportNameReply = false;
  /** Read lengths by handle (hex): a read reply's data length is only known from its request. */
  readonly #readLengths = new Map<string, number>();

  constructor(client: net.Socket, upstream: net.Socket, shouldDrop: () => boolean, delayMs: number) {
    this.#client = client;
    this.#upstream = upstream;
    this.#shouldDrop = shouldDrop;
    this.#delayMs = delayMs;
    client.on("data", (d: Buffer) => this.#onClientData(d));
    upstream.on("data", (d: Buffer) => this.#onServerData(d));
    for (const s of [client, upstream]) {
      s.on("error", () => undefined);
      s.on("close", () => this.destroy());
    }
  }

  destroy(): void {
    for (const timer of this.#held) clearTimeout(timer);
    this.#held.clear();
    this.#client.destroy();
    this.#upstream.destroy();
  }

  #onClientData(d: Buffer): void {
    this.#fromClient.push(d);
    if (this.#fromClient.length > MAX_BUFFERED_BYTES) return this.destroy();
    while (!this.#client.destroyed) {
      const message = this.#transmission ? this.#nextRequest() : this.#nextClientHandshake();
      if (message === undefined) return;
      if (message !== "answered") this.#upstream.write(message);
    }
  }

  #onServerData(d: Buffer): void {
    this.#fromServer.push(d);
    if (this.#fromServer.length > MAX_BUFFERED_BYTES) return this.destroy();
    while (!this.#upstream.destroyed) {
      if (!this.#transmission) {
        const message = this.#nextServerHandshake();
        if (message === undefined) return;
        this.#client.write(message);
        continue;
      }
      const reply = this.#nextReply();
      if (reply === undefined) return;
      this.#reply(reply);
    }
  }

  /** Sends a transmission reply to the client, after the delay when there is one (every reply waits as long, so none overtakes another). */
  #reply(message: Buffer): void {
    if (this.#delayMs === 0) {
      this.#client.write(message);
      return;
    }
    const timer = setTimeout(() => {
      this.#held.delete(timer);
      if (!this.#client.destroyed) this.#client.write(message);
    }, this.#delayMs);
    this.#held.add(timer);
  }

  /** Client flags, then whole options; "answered" when the proxy replied itself; undefined until a whole one is queued. */
  #nextClientHandshake(): Buffer | "answered" | undefined {
    const q = this.#fromClient;
    if (!this.#clientFlagsSeen) {
      if (q.length < 4) return undefined;
      this.#clientFlagsSeen = true;
      const flags = q.take(4);
      this.#clientNoZeroes = (flags.readUInt32BE(0) & CLIENT_FLAG.NO_ZEROES) !== 0;
      return flags;
    }
    if (q.length < OPTION_HEADER_BYTES) return undefined;
    const header = q.peek(OPTION_HEADER_BYTES);
    const option = header.readUInt32BE(8);
    const lengthBytes = header.readUInt32BE(12);
    if (!header.subarray(0, 8).equals(IHAVEOPT) || lengthBytes > MAX_OPTION_REPLY_BYTES) {
      this.destroy();
      return undefined;
    }
    if (q.length < OPTION_HEADER_BYTES + lengthBytes) return undefined;
    if (UNSUPPORTED_OPTIONS.has(option)) {
      // Fixed newstyle: the client waits for this reply before its next option, so it cannot cross a server reply.
      q.take(OPTION_HEADER_BYTES + lengthBytes);
      this.#client.write(optionReply(option, OPTION_REPLY.ERR_UNSUP));
      return "answered";
    }
    if (option === OPTION.EXPORT_NAME) this.#awaitingExportNameReply = true;
    return q.take(OPTION_HEADER_BYTES + lengthBytes);
  }

  /** Greeting, then whole option replies; switches to transmission after GO's ACK or EXPORT_NAME's reply. */
  #nextServerHandshake(): Buffer | undefined {
    const q = this.#fromServer;
    if (!this.#greetingSeen) {
      if (q.length < GREETING_BYTES) return undefined;
      this.#greetingSeen = true;
      const greeting = q.take(GREETING_BYTES);
      this.#serverNoZeroes = (greeting.readUInt16BE(16) & HANDSHAKE_FLAG.NO_ZEROES) !== 0;
      return greeting;
    }
    if (this.#awaitingExportNameReply) {
      const zeroes = this.#serverNoZeroes && this.#clientNoZeroes ? 0 : EXPORT_NAME_REPLY_ZEROES_BYTES;
      if (q.length < EXPORT_NAME_REPLY_BYTES + zeroes) return undefined;
      this.#transmission = true;
      return q.take(EXPORT_NAME_REPLY_BYTES + zeroes);
    }
    if (q.length < OPTION_REPLY_HEADER_BYTES) return undefined;
    const header = q.peek(OPTION_REPLY_HEADER_BYTES);
    const lengthBytes = header.readUInt32BE(16);
    if (lengthBytes > MAX_OPTION_REPLY_BYTES) {
      this.destroy();
      return undefined;
    }
    if (q.length < OPTION_REPLY_HEADER_BYTES + lengthBytes) return undefined;
    if (header.readUInt32BE(8) === OPTION.GO && header.readUInt32BE(12) === OPTION_REPLY.ACK) this.#transmission = true;
    return q.take(OPTION_REPLY_HEADER_BYTES + lengthBytes);
  }

  /** A whole request to forward, "answered" when it was a write answered here, undefined until one is queued. */
  #nextRequest(): Buffer | "answered" | undefined {
    const q = this.#fromClient;
    if (q.length < REQUEST_HEADER_BYTES) return undefined;
    const header = q.peek(REQUEST_HEADER_BYTES);
    const command = header.readUInt16BE(6);
    const lengthBytes = header.readUInt32BE(24);
    if (header.readUInt32BE(0) !== REQUEST_MAGIC || (command === COMMAND.WRITE && lengthBytes > MAX_REQUEST_BYTES)) {
      this.destroy();
      return undefined;
    }
    const total = REQUEST_HEADER_BYTES + (command === COMMAND.WRITE ? lengthBytes : 0);
    if (q.length < total) return undefined;
    const message = q.take(total);
    const handle = message.toString("hex", 8, 16);
    if (command === COMMAND.READ) this.#readLengths.set(handle, lengthBytes);
    if (command !== COMMAND.WRITE || !this.#shouldDrop()) return message;
    // The lie under test: success, and the data goes nowhere.
    const reply = Buffer.alloc(SIMPLE_REPLY_HEADER_BYTES);
    reply.writeUInt32BE(SIMPLE_REPLY_MAGIC, 0);
    message.copy(reply, 8, 8, 16);
    this.#reply(reply);
    return "answered";
  }

  #nextReply(): Buffer | undefined {
    const q = this.#fromServer;
    if (q.length < SIMPLE_REPLY_HEADER_BYTES) return undefined;
    const header = q.peek(SIMPLE_REPLY_HEADER_BYTES);
    if (header.readUInt32BE(0) !== SIMPLE_REPLY_MAGIC) {
      this.destroy();
      return undefined;
    }
    const handle = header.toString("hex", 8, 16);
    const dataBytes = header.readUInt32BE(4) === 0 ? (this.#readLengths.get(handle) ?? 0) : 0;
    if (q.length < SIMPLE_REPLY_HEADER_BYTES + dataBytes) return undefined;
    this.#readLengths.delete(handle);
    return q.take(SIMPLE_REPLY_HEADER_BYTES + dataBytes);
  }
}

/** A listening lossy proxy. */
export class LossyNbdProxy {
  readonly socketPath: string;
  /** nbd+unix URI of the proxy, with the upstream's export name. */
  readonly uri: string;
  readonly #server: net.Server;
  readonly #connections = new Set<ProxiedConnection>();
  /** Drop every this-many-th write; 0 drops none. */
  readonly #dropEvery: number;
  /** Ms every reply is held back. */
  readonly #delayMs: number;
  #writesSeen = 0;
  #writesDropped = 0;

  private constructor(server: net.Server, socketPath: string, exportName: string, dropEvery: number, delayMs: number) {
    this.#server = server;
    this.socketPath = socketPath;
    this.uri = formatNbdUri({ transport: "unix", socketPath, exportName });
    this.#dropEvery = dropEvery;
    this.#delayMs = delayMs;
  }

  /** Starts listening on `socketPath`; upstream connections are made per client connection. */
  static async start(options: LossyNbdProxyOptions): Promise<LossyNbdProxy> {
    const dropEvery = options.dropEveryNthWrite ?? DEFAULT_DROP_EVERY_NTH_WRITE;
    if (!Number.isInteger(dropEvery) || dropEvery < 0) {
      throw new ConformanceError({
        code: "INVALID_ARGUMENT",
        message: `dropEveryNthWrite ${dropEvery} is not an integer >= 0 (0 drops none)`,
      });
    }
    const delayMs = options.delayEveryReplyMs ?? 0;
    if (!Number.isInteger(delayMs) || delayMs < 0 || delayMs > MAX_REPLY_DELAY_MS) {
      throw new ConformanceError({
        code: "INVALID_ARGUMENT",
        message: `delayEveryReplyMs ${delayMs} is not an integer from 0 to ${MAX_REPLY_DELAY_MS} (0 delays none)`,
      });
    }
    const upstream = parseNbdUri(options.upstreamUri);
    fs.rmSync(options.socketPath, { force: true });
    const server = net.createServer();
    const proxy = new LossyNbdProxy(server, options.socketPath, upstream.exportName, dropEvery, delayMs);
    server.on("connection", (client) => {
      const connection = new ProxiedConnection(client, connectUpstream(upstream), () => proxy.#shouldDrop(), proxy.#delayMs);
      proxy.#connections.add(connection);
      client.on("close", () => proxy.#connections.delete(connection));
    });
    await new Promise<void>((resolve, reject) => {
      server.once("error", reject);
      server.listen(options.socketPath, () => resolve());
    });
    return proxy;
  }

  /** Writes that passed through, dropped ones included. */
  get writesSeen(): number {
    return this.#writesSeen;
  }

  /** Writes acknowledged without being forwarded. */
  get writesDropped(): number {
    return this.#writesDropped;
  }

  #shouldDrop(): boolean {
    this.#writesSeen++;
    if (this.#dropEvery === 0 || this.#writesSeen % this.#dropEvery !== 0) return false;
    this.#writesDropped++;
    return true;
  }

  /** Stops listening and cuts every connection. Idempotent. */
  async close(): Promise<void> {
    for (const c of this.#connections) c.destroy();
    this.#connections.clear();
    await new Promise<void>((resolve) => this.#server.close(() => resolve()));
    fs.rmSync(this.socketPath, { force: true });
  }

  async [Symbol.asyncDispose](): Promise<void> {
    await this.close();
  }
}
