import net from "node:net";
import tls from "node:tls";
import { KeelsonError } from "@keelson/sdk";
import type { AllocationRun } from "../nbd/export.js";
import {
  AllocationState,
  BASE_ALLOCATION,
  ClientFlag,
  Command,
  CommandFlag,
  Errno,
  IHAVEOPT,
  MAX_BLOCK_STATUS_DESCRIPTORS,
  NBDMAGIC,
  OPTION_REPLY_MAGIC,
  Option,
  OptionReply,
  REQUEST_HEADER_BYTES,
  REQUEST_MAGIC,
  SIMPLE_REPLY_HEADER_BYTES,
  SIMPLE_REPLY_MAGIC,
} from "../nbd/protocol.js";
import {
  CHUNK_HEADER_BYTES,
  ERROR_PREFIX_BYTES,
  isErrorChunk,
  MAX_ERROR_MESSAGE_BYTES,
  OFFSET_DATA_PREFIX_BYTES,
  OFFSET_HOLE_PAYLOAD_BYTES,
  parseErrorMessage,
  parseErrorPayload,
  ReplyFlag,
  ReplyType,
  STRUCTURED_REPLY_MAGIC,
} from "../nbd/structured-reply.js";
import { ChunkQueue } from "../util/chunk-queue.js";
import { messageOf } from "../util/errors.js";
import { intoOrNew } from "./local-replica.js";

/** Requests one replica connection keeps in flight; more wait for a free slot, in order. */
export const MAX_REPLICA_INFLIGHT = 128;
/**
 * Requests that may wait for a slot. The frontend's NBD server lets each
 * connection run 128 requests and bounds their payloads by its byte budget,
 * so a burst stays far below this; past it a request fails LIMIT_EXCEEDED.
 */
export const MAX_REPLICA_QUEUED = 16_384;
/** Bytes of write payloads and read replies the waiting requests may stand for (above the NBD server's default budget). */
export const MAX_REPLICA_QUEUED_BYTES = 512 * 1024 * 1024;
/** Most bytes the handshake may have buffered unread; a peer sending more is not an NBD server we can use. */
const MAX_HANDSHAKE_BYTES = 1024 * 1024;
/** Time to connect and negotiate. */
const CONNECT_TIMEOUT_MS = 5_000;

/** Codes a replica server's refusal (NBD_REP_ERR_POLICY, its message `CODE: why`) keeps on this side. */
const REFUSAL_CODES = ["EPOCH_STALE", "PERMISSION_DENIED"] as const;

/** The typed error of an option error reply: ERR_UNKNOWN is a replica unknown or fenced past the epoch. */
function refusal(exportName: string, type: number, data: Buffer): KeelsonError {
  if (type === OptionReply.ERR_UNKNOWN) {
    return new KeelsonError({
      code: "EPOCH_STALE",
      message: `replica refused export ${exportName}: unknown or fenced at a newer epoch`,
    });
  }
  const said = data.toString("utf8", 0, Math.min(data.length, 1024));
  const code = REFUSAL_CODES.find((c) => type === OptionReply.ERR_POLICY && said.startsWith(`${c}: `)) ?? "UNAVAILABLE";
  return new KeelsonError({ code, message: `replica refused export ${exportName} (reply ${type - 2 ** 31}): ${said}` });
}

/** How an engine dials its peers' replica listeners. */
export interface ReplicaDial {
  /** Mutual TLS under the cluster CA (PEM contents): this node's certificate and key, and the CA peers' certificates chain to. */
  tls?: { cert: Buffer; key: Buffer; ca: Buffer };
  /** The local address to connect from: this node's storage address (peers without TLS know a node by it). */
  localAddress?: string;
}

/** Opens the socket to `address` (`host:port` or a unix socket path) as `dial` says; resolves once it may carry NBD. */
function dialSocket(address: string, dial: ReplicaDial, what: string, failure: (m: string) => KeelsonError): Promise<net.Socket> {
  const unix = address.startsWith("/");
  const at = address.lastIndexOf(":");
  const host = address.slice(0, at).replace(/^\[|\]$/g, "");
  const port = Number(address.slice(at + 1));
  const local = dial.localAddress ? { localAddress: dial.localAddress } : {};
  const socket: net.Socket = unix
    ? net.connect(address)
    : dial.tls
      ? tls.connect({ host, port, ...dial.tls, ...local })
      : net.connect({ host, port, ...local });
  if (!unix) socket.setNoDelay(true);
  return new Promise<net.Socket>((resolve, reject) => {
    const timer = setTimeout(() => {
      socket.destroy();
      reject(failure(`no connection in ${CONNECT_TIMEOUT_MS} ms`));
    }, CONNECT_TIMEOUT_MS);
    socket.once(dial.tls && !unix ? "secureConnect" : "connect", () => {
      clearTimeout(timer);
      resolve(socket);
    });
    socket.once("error", (e) => {
      clearTimeout(timer);
      socket.destroy();
      reject(replicaError("closed", `${what}: ${messageOf(e)}`));
    });
  });
}
/** Largest error chunk payload accepted: errno, message length, the longest message, an offset. */
const MAX_ERROR_CHUNK_BYTES = ERROR_PREFIX_BYTES + MAX_ERROR_MESSAGE_BYTES + 8;
/** A BLOCK_STATUS chunk's payload at most: the context id and the descriptors a query may ask for. */
const MAX_STATUS_CHUNK_BYTES = 4 + 8 * MAX_BLOCK_STATUS_DESCRIPTORS;

/**
 * Why a replica request failed: the replica answered an error, or it could not
 * be reached in time. An errno alone cannot tell fencing from a read-only or
 * refused request; this mapping is only the fallback for a reply without a
 * keelson code (a simple reply from a peer without structured replies), where
 * EPERM from a writable replica export means its fence moved past this
 * connection's epoch.
 */
function replicaError(kind: "errno" | "timeout" | "closed", detail: string, errno = 0): KeelsonError {
  const code =
    kind === "errno" && errno === Errno.EPERM
      ? "EPOCH_STALE"
      : kind === "errno" && errno === Errno.ENOSPC
        ? "NO_SPACE"
        : "UNAVAILABLE";
  return new KeelsonError({ code, message: `replica ${detail}` });
}

/**
 * The error of a structured error chunk: the keelson code the replica put at
 * the start of its message, so EPOCH_STALE stays EPOCH_STALE, READ_ONLY stays
 * READ_ONLY and INVALID_ARGUMENT stays INVALID_ARGUMENT; the errno mapping
 * when the message names no code.
 */
function chunkError(name: string, errno: number, message: string): KeelsonError {
  const code = parseErrorMessage(message);
  if (code === null) return replicaError("errno", `${name}: error ${errno}${message ? ` (${message})` : ""}`, errno);
  return new KeelsonError({ code, message: `replica ${name}: ${message.slice(code.length + 1).trimStart()}` });
}

interface Pending {
  resolve: (data: Buffer | null) => void;
  reject: (error: KeelsonError) => void;
  /** Bytes of payload the reply carries (reads). */
  replyBytes: number;
  /** Offset of the request (structured data chunks name absolute offsets). */
  offset: number;
  /** Data of a read being assembled from structured chunks (its destination, for a read). */
  data: Buffer | null;
  /** Bytes of `data` the chunks so far covered. */
  filledBytes: number;
  /** The first error chunk of this reply; the reply fails with it once DONE arrives. */
  error: KeelsonError | null;
  /** A BLOCK_STATUS query: its reply is one BLOCK_STATUS chunk, kept whole in `data`. */
  status: boolean;
  /** When it was sent (ms, monotonic): its deadline is this plus the replica timeout. */
  sentAtMs: number;
}

/** A request waiting for an in-flight slot: what `#send` needs to send it. */
interface Queued {
  type: number;
  flags: number;
  offset: number;
  length: number;
  payload: Buffer | null;
  replyBytes: number;
  /** Where a read's data goes (`replyBytes` long); null for every other request. */
  into: Buffer | null;
  resolve: (data: Buffer | null) => void;
  reject: (error: KeelsonError) => void;
}

/** Bytes a request stands for while it waits: its payload, or the reply it will get. */
function queuedBytes(q: Queued): number {
  return (q.payload?.length ?? 0) + q.replyBytes;
}

/**
 * An NBD client for replica traffic: fixed newstyle negotiation with
 * structured replies (so errors keep their keelson code) and OPT_GO, then
 * pipelined requests matched to replies by handle. Every request
 * has a deadline (the replica timeout); a request that misses it fails and
 * the connection is closed, so a replica that stalls cannot stall the volume.
 */
export class ReplicaClient {
  readonly name: string;
  readonly sizeBytes: number;
  readonly #socket: net.Socket;
  readonly #timeoutMs: number;
  /** Whether the replica agreed to structured replies; without them errors are bare errnos. */
  readonly #structured: boolean;
  /** The replica's id for base:allocation; null when it offered none (block status then answers all data). */
  readonly #allocationContextId: number | null;
  /** Requests sent and not answered, by handle; in the order sent (a Map keeps insertion order). */
  readonly #pending = new Map<number, Pending>();
  /** The one timer that watches the oldest request's deadline (a timer per request cost more than the send). */
  #deadlineTimer: NodeJS.Timeout | null = null;
  /** Whether the socket is corked until the end of this turn (requests sent in one turn go in one write). */
  #corked = false;
  /** Requests waiting for an in-flight slot, oldest first (from `#queueHead` on). */
  #queue: Array<Queued | undefined> = [];
  #queueHead = 0;
  /** Bytes the waiting requests stand for (see `queuedBytes`). */
  #queuedBytes = 0;
  /** Handles are numbers below 2^53 (a Map of numbers is cheaper than one of bigints); the wire carries 64 bits. */
  #nextHandle = 1;
  /** Reply bytes received and not parsed yet. */
  readonly #rx = new ChunkQueue();
  #closed: KeelsonError | null = null;

  private constructor(
    socket: net.Socket,
    name: string,
    sizeBytes: number,
    timeoutMs: number,
    negotiated: { structured: boolean; allocationContextId: number | null },
  ) {
    this.#socket = socket;
    this.#structured = negotiated.structured;
    this.#allocationContextId = negotiated.allocationContextId;
    this.name = name;
    this.sizeBytes = sizeBytes;
    this.#timeoutMs = timeoutMs;
    socket.on("data", (d: Buffer) => this.#onData(d));
    socket.on("close", () => this.#fail(replicaError("closed", `${name}: connection closed`)));
    socket.on("error", () => undefined);
  }

  /** True once the connection is closed or failed; nothing more can be sent. */
  get closed(): boolean {
    return this.#closed !== null;
  }

  get inflight(): number {
    return this.#pending.size;
  }

  /** Requests waiting for an in-flight slot. */
  get queued(): number {
    return this.#queue.length - this.#queueHead;
  }

  /**
   * Connects to `host:port` (or a unix socket path) and opens export `exportName` (`VOLUME#EPOCH`, or
   * `VOLUME@SNAPSHOT` to read a snapshot), over mutual TLS when `dial` has it.
   */
  static async connect(address: string, exportName: string, timeoutMs: number, dial: ReplicaDial = {}): Promise<ReplicaClient> {
    const what = `${exportName}@${address}`;
    const socket = await dialSocket(address, dial, what, (m) => replicaError("timeout", `${what}: ${m}`));
    const reader = new HandshakeReader(socket, what);
    try {
      const { sizeBytes, ...negotiated } = await negotiate(socket, reader, exportName);
      reader.detach();
      const client = new ReplicaClient(socket, what, sizeBytes, timeoutMs, negotiated);
      if (reader.rest.length > 0) client.#onData(reader.rest.take(reader.rest.length));
      return client;
    } catch (error) {
      socket.destroy();
      if (error instanceof KeelsonError) throw error;
      throw replicaError("closed", `${what}: ${messageOf(error)}`);
    }
  }

  async read(offset: number, length: number, into?: Buffer): Promise<Buffer> {
    return this.#send(Command.READ, 0, offset, length, null, length, intoOrNew(length, into)) as Promise<Buffer>;
  }

  async write(offset: number, data: Buffer, fua: boolean): Promise<void> {
    await this.#send(Command.WRITE, fua ? CommandFlag.FUA : 0, offset, data.length, data, 0);
  }

  async zero(offset: number, length: number, trim: boolean, noHole: boolean, fua: boolean): Promise<void> {
    const flags = (noHole ? CommandFlag.NO_HOLE : 0) | (fua ? CommandFlag.FUA : 0);
    await this.#send(trim ? Command.TRIM : Command.WRITE_ZEROES, trim ? flags & CommandFlag.FUA : flags, offset, length, null, 0);
  }

  async saveActivity(payload: Buffer): Promise<void> {
    await this.#send(Command.KEELSON_ACTIVITY, 0, 0, payload.length, payload, 0);
  }

  async flush(): Promise<void> {
    await this.#send(Command.FLUSH, 0, 0, 0, null, 0);
  }

  /**
   * NBD_CMD_BLOCK_STATUS (base:allocation) on the replica. A descriptor is a
   * hole only when the replica says both HOLE and ZERO; an answer the protocol
   * forbids closes the connection like any other protocol violation.
   */
  async blockStatus(offset: number, length: number, maxRuns: number): Promise<AllocationRun[]> {
    const contextId = this.#allocationContextId;
    if (contextId === null) return [{ lengthBytes: length, status: "data" }];
    const payload = await this.#send(Command.BLOCK_STATUS, maxRuns === 1 ? CommandFlag.REQ_ONE : 0, offset, length, null, 0);
    const runs: AllocationRun[] = [];
    let total = 0;
    let bad = payload === null ? "a block status reply without a BLOCK_STATUS chunk" : null;
    if (payload !== null && payload.readUInt32BE(0) !== contextId)
      bad = `a block status reply for context ${payload.readUInt32BE(0)}`;
    for (let at = 4; payload !== null && bad === null && at + 8 <= payload.length && total < length; at += 8) {
      // The last descriptor may reach past the query (the protocol allows it without REQ_ONE): cut to the query.
      const lengthBytes = Math.min(payload.readUInt32BE(at), length - total);
      if (lengthBytes === 0) bad = "a block status descriptor of 0 bytes";
      const flags = payload.readUInt32BE(at + 4);
      const hole = (flags & (AllocationState.HOLE | AllocationState.ZERO)) === (AllocationState.HOLE | AllocationState.ZERO);
      const status = hole ? "hole" : "data";
      const last = runs[runs.length - 1];
      if (last?.status === status) last.lengthBytes += lengthBytes;
      else if (runs.length < maxRuns) runs.push({ lengthBytes, status });
      else break;
      total += lengthBytes;
    }
    if (bad !== null || runs.length === 0) {
      this.#protocolError(bad ?? "a block status reply without descriptors");
      throw this.#closed ?? replicaError("closed", `${this.name}: bad block status reply`);
    }
    return runs;
  }

  /** Closes the connection; requests in flight fail. Idempotent. */
  close(): void {
    this.#fail(replicaError("closed", `${this.name}: closed`));
  }

  #send(
    type: number,
    flags: number,
    offset: number,
    length: number,
    payload: Buffer | null,
    replyBytes: number,
    into: Buffer | null = null,
  ): Promise<Buffer | null> {
    if (this.#closed) return Promise.reject(this.#closed);
    return new Promise((resolve, reject) => {
      const q: Queued = { type, flags, offset, length, payload, replyBytes, into, resolve, reject };
      if (this.#pending.size < MAX_REPLICA_INFLIGHT && this.queued === 0) return this.#start(q);
      if (this.queued >= MAX_REPLICA_QUEUED || this.#queuedBytes + queuedBytes(q) > MAX_REPLICA_QUEUED_BYTES) {
        const what = `${this.queued} requests (${this.#queuedBytes} bytes) already wait behind ${MAX_REPLICA_INFLIGHT} in flight`;
        return reject(new KeelsonError({ code: "LIMIT_EXCEEDED", message: `replica ${this.name}: ${what}` }));
      }
      this.#queue.push(q);
      this.#queuedBytes += queuedBytes(q);
    });
  }

  /** Sends waiting requests while slots are free. */
  #startQueued(): void {
    while (this.#closed === null && this.queued > 0 && this.#pending.size < MAX_REPLICA_INFLIGHT) {
      const q = this.#queue[this.#queueHead] as Queued;
      this.#queue[this.#queueHead++] = undefined;
      this.#queuedBytes -= queuedBytes(q);
      if (this.#queueHead === this.#queue.length) {
        this.#queue = [];
        this.#queueHead = 0;
      } else if (this.#queueHead >= 1024) {
        this.#queue = this.#queue.slice(this.#queueHead);
        this.#queueHead = 0;
      }
      this.#start(q);
    }
  }

  /**
   * Sends one request; its deadline starts now, not while it waited for a slot. The payload is not
   * copied: the socket holds it until the kernel has it, so the caller must not change it before the
   * request settles. Requests sent in one turn of the event loop leave in one write (the socket is
   * corked until the turn ends), one syscall per replica connection per batch.
   */
  #start(q: Queued): void {
    const { type, flags, offset, length, payload, replyBytes, into, resolve, reject } = q;
    const handle = this.#nextHandle++;
    const header = Buffer.allocUnsafe(REQUEST_HEADER_BYTES);
    header.writeUInt32BE(REQUEST_MAGIC, 0);
    header.writeUInt16BE(flags, 4);
    header.writeUInt16BE(type, 6);
    header.writeUInt32BE(Math.floor(handle / 2 ** 32), 8);
    header.writeUInt32BE(handle >>> 0, 12);
    header.writeUInt32BE(Math.floor(offset / 2 ** 32), 16);
    header.writeUInt32BE(offset >>> 0, 20);
    header.writeUInt32BE(length, 24);
    const status = type === Command.BLOCK_STATUS;
    const sentAtMs = performance.now();
    this.#pending.set(handle, { resolve, reject, replyBytes, offset, data: into, filledBytes: 0, error: null, status, sentAtMs });
    this.#deadlineTimer ??= setTimeout(() => this.#checkDeadline(), this.#timeoutMs);
    if (!this.#corked) {
      this.#corked = true;
      this.#socket.cork();
      process.nextTick(() => {
        this.#corked = false;
        this.#socket.uncork();
      });
    }
    this.#socket.write(header);
    if (payload && payload.length > 0) this.#socket.write(payload);
  }

  /** The oldest request missed its deadline: the connection fails (a stalled replica must not stall the volume). */
  #checkDeadline(): void {
    this.#deadlineTimer = null;
    const oldest = this.#pending.values().next();
    if (oldest.done) return;
    const late = performance.now() - oldest.value.sentAtMs;
    if (late >= this.#timeoutMs) {
      this.#fail(replicaError("timeout", `${this.name}: no reply in ${this.#timeoutMs} ms`));
      return;
    }
    this.#deadlineTimer = setTimeout(() => this.#checkDeadline(), this.#timeoutMs - late);
  }

  #onData(d: Buffer): void {
    this.#rx.push(d);
    while (this.#closed === null) {
      const used =
        this.#rx.length >= 4 && this.#rx.peek(4).readUInt32BE(0) === SIMPLE_REPLY_MAGIC ? this.#simple() : this.#chunk();
      if (!used) break;
    }
    this.#startQueued();
  }

  /** A reply ended: its slot is free. */
  #settled(handle: number): void {
    this.#pending.delete(handle);
    if (this.#pending.size === 0 && this.#deadlineTimer) {
      clearTimeout(this.#deadlineTimer);
      this.#deadlineTimer = null;
    }
  }

  /** Parses and consumes one simple reply; false while it is incomplete or after a failure. */
  #simple(): boolean {
    if (this.#rx.length < SIMPLE_REPLY_HEADER_BYTES) return false;
    const head = this.#rx.peek(SIMPLE_REPLY_HEADER_BYTES);
    const errno = head.readUInt32BE(4);
    const handle = head.readUInt32BE(8) * 2 ** 32 + head.readUInt32BE(12);
    const p = this.#pending.get(handle);
    if (!p) return this.#protocolError(`reply for unknown handle ${handle}`);
    const payload = errno === 0 ? p.replyBytes : 0;
    if (this.#rx.length < SIMPLE_REPLY_HEADER_BYTES + payload) return false;
    this.#rx.skip(SIMPLE_REPLY_HEADER_BYTES);
    // Copied into the read's destination: a view would keep a whole received chunk alive as long as the caller keeps the data.
    // A read of 0 bytes resolves with its (empty) destination too, as a structured reply's does.
    const data = payload > 0 ? this.#rx.takeInto(payload, p.data as Buffer) : p.data;
    this.#settled(handle);
    if (errno === 0) p.resolve(data);
    else p.reject(replicaError("errno", `${this.name}: error ${errno}`, errno));
    return true;
  }

  /** Parses and consumes one structured reply chunk; false while it is incomplete or after a failure. */
  #chunk(): boolean {
    if (this.#rx.length < CHUNK_HEADER_BYTES) return false;
    const buf = this.#rx.peek(CHUNK_HEADER_BYTES);
    if (!this.#structured || buf.readUInt32BE(0) !== STRUCTURED_REPLY_MAGIC) return this.#protocolError("bad reply magic");
    const flags = buf.readUInt16BE(4);
    const type = buf.readUInt16BE(6);
    const handle = buf.readUInt32BE(8) * 2 ** 32 + buf.readUInt32BE(12);
    const length = buf.readUInt32BE(16);
    const p = this.#pending.get(handle);
    if (!p) return this.#protocolError(`reply for unknown handle ${handle}`);
    if (
      length > Math.max(OFFSET_DATA_PREFIX_BYTES + p.replyBytes, MAX_ERROR_CHUNK_BYTES, p.status ? MAX_STATUS_CHUNK_BYTES : 0)
    ) {
      return this.#protocolError(`reply chunk of ${length} bytes for a request of ${p.replyBytes}`);
    }
    if (this.#rx.length < CHUNK_HEADER_BYTES + length) return false;
    this.#rx.skip(CHUNK_HEADER_BYTES);
    const problem = this.#applyChunk(p, type, this.#rx.take(length));
    if (problem) return this.#protocolError(problem);
    if ((flags & ReplyFlag.DONE) !== 0) {
      if (!p.error && p.filledBytes !== p.replyBytes) {
        return this.#protocolError(`reply ended with ${p.filledBytes} of ${p.replyBytes} bytes`);
      }
      this.#settled(handle);
      if (p.error) p.reject(p.error);
      else p.resolve(p.data);
    }
    return true;
  }

  /** Adds one chunk's content to its reply; a description of the protocol violation, or null. */
  #applyChunk(p: Pending, type: number, payload: Buffer): string | null {
    if (type === ReplyType.NONE) return payload.length === 0 ? null : "NONE chunk with a payload";
    if (type === ReplyType.BLOCK_STATUS) {
      if (!p.status || p.data !== null) return "BLOCK_STATUS chunk for a request that is not a block status query";
      if (payload.length < 12 || (payload.length - 4) % 8 !== 0) return `BLOCK_STATUS chunk of ${payload.length} bytes`;
      // A copy: the chunk queue's buffer is reused.
      p.data = Buffer.from(payload);
      return null;
    }
    if (type === ReplyType.OFFSET_DATA || type === ReplyType.OFFSET_HOLE) {
      const isData = type === ReplyType.OFFSET_DATA;
      if (isData ? payload.length <= OFFSET_DATA_PREFIX_BYTES : payload.length !== OFFSET_HOLE_PAYLOAD_BYTES)
        return `content chunk of ${payload.length} bytes`;
      const at = payload.readUInt32BE(0) * 2 ** 32 + payload.readUInt32BE(4) - p.offset;
      const bytes = isData ? payload.length - OFFSET_DATA_PREFIX_BYTES : payload.readUInt32BE(8);
      if (at < 0 || bytes === 0 || at + bytes > p.replyBytes) return "content chunk outside the request";
      p.data ??= Buffer.allocUnsafe(p.replyBytes);
      if (isData) payload.copy(p.data, at, OFFSET_DATA_PREFIX_BYTES);
      else p.data.fill(0, at, at + bytes);
      // Our server sends one chunk per read; a peer that splits a read must not overlap chunks (the protocol forbids it).
      p.filledBytes += bytes;
      return null;
    }
    if (!isErrorChunk(type)) return `unknown reply chunk type ${type}`;
    const parsed = parseErrorPayload(payload);
    if (!parsed || parsed.errno === 0) return "malformed error chunk";
    p.error ??= chunkError(this.name, parsed.errno, parsed.message);
    return null;
  }

  /** The replica broke the protocol: nothing more on this connection can be trusted. */
  #protocolError(detail: string): false {
    this.#fail(replicaError("closed", `${this.name}: ${detail}`));
    return false;
  }

  #fail(error: KeelsonError): void {
    if (!this.#closed) this.#closed = error;
    this.#socket.destroy();
    this.#rx.clear();
    if (this.#deadlineTimer) clearTimeout(this.#deadlineTimer);
    this.#deadlineTimer = null;
    for (const p of this.#pending.values()) p.reject(error);
    this.#pending.clear();
    const queue = this.#queue;
    const head = this.#queueHead;
    this.#queue = [];
    this.#queueHead = 0;
    this.#queuedBytes = 0;
    for (let i = head; i < queue.length; i++) queue[i]?.reject(error);
  }
}

/** Buffers handshake bytes and hands out exact-length reads. */
class HandshakeReader {
  readonly #socket: net.Socket;
  /** `EXPORT@ADDRESS`, named in every handshake failure. */
  readonly #where: string;
  /** Bytes received and not taken; what is left after the handshake belongs to the first replies. */
  readonly rest = new ChunkQueue();
  #waiter: (() => void) | null = null;
  #ended = false;
  readonly #onData = (d: Buffer): void => {
    this.rest.push(d);
    // Nothing in the negotiation is this large: a peer sending more is not a usable NBD server.
    if (this.rest.length > MAX_HANDSHAKE_BYTES) {
      this.#ended = true;
      this.#socket.destroy();
    }
    this.#waiter?.();
  };
  readonly #onEnd = (): void => {
    this.#ended = true;
    this.#waiter?.();
  };

  constructor(socket: net.Socket, where: string) {
    this.#socket = socket;
    this.#where = where;
    socket.on("data", this.#onData);
    socket.on("close", this.#onEnd);
  }

  async take(n: number): Promise<Buffer> {
    const deadline = Date.now() + CONNECT_TIMEOUT_MS;
    while (this.rest.length < n) {
      if (this.#ended) throw this.failure("connection closed during negotiation");
      if (Date.now() > deadline) throw this.failure("negotiation timed out");
      await new Promise<void>((resolve) => {
        this.#waiter = resolve;
        setTimeout(resolve, 100);
      });
      this.#waiter = null;
    }
    return this.rest.take(n);
  }

  /** A failed handshake: the replica is not usable at this address, UNAVAILABLE like a refused connection. */
  failure(detail: string): KeelsonError {
    return replicaError("closed", `${this.#where}: ${detail}`);
  }

  detach(): void {
    this.#socket.off("data", this.#onData);
    this.#socket.off("close", this.#onEnd);
  }
}

/** NBD_OPT_SET_META_CONTEXT data: the export and the one query, base:allocation. */
function setMetaContextOption(name: Buffer): Buffer {
  const query = Buffer.from(BASE_ALLOCATION, "utf8");
  const opt = Buffer.alloc(16 + 4 + name.length + 4 + 4 + query.length);
  IHAVEOPT.copy(opt, 0);
  opt.writeUInt32BE(Option.SET_META_CONTEXT, 8);
  opt.writeUInt32BE(opt.length - 16, 12);
  opt.writeUInt32BE(name.length, 16);
  name.copy(opt, 20);
  opt.writeUInt32BE(1, 20 + name.length);
  opt.writeUInt32BE(query.length, 24 + name.length);
  query.copy(opt, 28 + name.length);
  return opt;
}

/**
 * Fixed newstyle negotiation: structured replies, base:allocation, then
 * OPT_GO; resolves with the export size, whether replies are structured and
 * the id of base:allocation (null when the replica offered none).
 */
async function negotiate(
  socket: net.Socket,
  r: HandshakeReader,
  exportName: string,
): Promise<{ sizeBytes: number; structured: boolean; allocationContextId: number | null }> {
  const greeting = await r.take(18);
  if (!greeting.subarray(0, 8).equals(NBDMAGIC) || !greeting.subarray(8, 16).equals(IHAVEOPT)) {
    throw r.failure("not an NBD server (bad greeting)");
  }
  const flags = Buffer.alloc(4);
  flags.writeUInt32BE(ClientFlag.FIXED_NEWSTYLE | ClientFlag.NO_ZEROES, 0);
  const askStructured = Buffer.alloc(16);
  IHAVEOPT.copy(askStructured, 0);
  askStructured.writeUInt32BE(Option.STRUCTURED_REPLY, 8);
  const name = Buffer.from(exportName, "utf8");
  const opt = Buffer.alloc(16 + 4 + name.length + 2);
  IHAVEOPT.copy(opt, 0);
  opt.writeUInt32BE(Option.GO, 8);
  opt.writeUInt32BE(4 + name.length + 2, 12);
  opt.writeUInt32BE(name.length, 16);
  name.copy(opt, 20);
  opt.writeUInt16BE(0, 20 + name.length);
  socket.write(Buffer.concat([flags, askStructured, setMetaContextOption(name), opt]));
  let sizeBytes = -1;
  let structured = false;
  let allocationContextId: number | null = null;
  for (let replies = 0; replies < 64; replies++) {
    const head = await r.take(20);
    if (head.readBigUInt64BE(0) !== OPTION_REPLY_MAGIC) throw r.failure("bad option reply magic");
    const type = head.readUInt32BE(12);
    const data = await r.take(head.readUInt32BE(16));
    if (head.readUInt32BE(8) === Option.STRUCTURED_REPLY) {
      // Any error (ERR_UNSUP from an older peer) leaves simple replies, whose errors are bare errnos.
      structured = type === OptionReply.ACK;
      continue;
    }
    if (head.readUInt32BE(8) === Option.SET_META_CONTEXT) {
      // Any error (no structured replies, an older peer) leaves block status answered as all data.
      if (type === OptionReply.META_CONTEXT && data.length > 4 && data.toString("utf8", 4) === BASE_ALLOCATION) {
        allocationContextId = data.readUInt32BE(0);
      }
      // An error after context replies voids them (the protocol says to disregard them).
      if (type >= 2 ** 31) allocationContextId = null;
      continue;
    }
    if (type === OptionReply.ACK) {
      if (sizeBytes < 0) throw r.failure("server acknowledged OPT_GO without export info");
      return { sizeBytes, structured: structured, allocationContextId: structured ? allocationContextId : null };
    }
    if (type === OptionReply.INFO && data.length >= 12 && data.readUInt16BE(0) === 0) sizeBytes = Number(data.readBigUInt64BE(2));
    else if (type >= 2 ** 31) throw refusal(exportName, type, data);
  }
  throw r.failure("too many option replies");
}
