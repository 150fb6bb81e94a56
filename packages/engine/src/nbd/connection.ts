import assert from "node:assert";
import type { Socket } from "node:net";
import { type ErrorCode, KeelsonError } from "@keelson/sdk";
import createDebug from "debug";
import type { BudgetWaiter, ByteBudget } from "./byte-budget.js";
import { asWireError, errnoOf } from "./errno.js";
import type { AdmissionWaiter, AllocationRun, BlockStatusCallback, NbdExport, RequestAdmission } from "./export.js";
import type { HandshakeResult } from "./handshake.js";
import {
  AllocationState,
  Command,
  CommandFlag,
  Errno,
  MAX_ACTIVITY_PAYLOAD_BYTES,
  MAX_BLOCK_STATUS_DESCRIPTORS,
  MAX_REQUEST_BYTES,
  REQUEST_HEADER_BYTES,
  REQUEST_MAGIC,
  SIMPLE_REPLY_HEADER_BYTES,
  SIMPLE_REPLY_MAGIC,
} from "./protocol.js";
import { type ReadBufferSocket, SMALL_READ_BYTES } from "./read-buffer-socket.js";
import { REPLY_HEADER_ROOM_BYTES, RequestBuffers } from "./request-buffers.js";
import {
  CHUNK_HEADER_BYTES,
  errorChunk,
  OFFSET_DATA_PREFIX_BYTES,
  ReplyFlag,
  ReplyType,
  writeChunkHeader,
} from "./structured-reply.js";

const debug = createDebug("keelson:nbd");

/** Requests one connection may have in flight; past it the socket stops being read until replies go out. */
export const MAX_INFLIGHT_PER_CONNECTION = 128;
const EMPTY = Buffer.alloc(0);
/** Request objects kept for reuse per connection. */
const MAX_FREE_REQUESTS = MAX_INFLIGHT_PER_CONNECTION;
/**
 * Bytes a throttled connection on the shared read buffer keeps before it stops reading: enough that a
 * client hanging up after a burst is seen (its end arrives behind the burst), small enough to bound.
 */
const THROTTLED_CARRY_BYTES = 64 * 1024;

const FLAGS_BY_COMMAND: Readonly<Record<number, number>> = {
  [Command.READ]: CommandFlag.FUA,
  [Command.WRITE]: CommandFlag.FUA,
  [Command.FLUSH]: CommandFlag.FUA,
  [Command.TRIM]: CommandFlag.FUA,
  [Command.WRITE_ZEROES]: CommandFlag.FUA | CommandFlag.NO_HOLE | CommandFlag.FAST_ZERO,
  [Command.DISC]: CommandFlag.FUA,
  // FUA means nothing to a query, but the protocol says a server advertising it accepts it on every command.
  [Command.BLOCK_STATUS]: CommandFlag.FUA | CommandFlag.REQ_ONE,
};

/** A BLOCK_STATUS reply's payload: the context id, then (length, status) per descriptor. */
const BLOCK_STATUS_REPLY_MAX_BYTES = CHUNK_HEADER_BYTES + 4 + 8 * MAX_BLOCK_STATUS_DESCRIPTORS;

function badFlags(type: number, flags: number): string {
  return `flags 0x${flags.toString(16)} are not valid for command ${type}`;
}

function tooLarge(length: number): string {
  return `request of ${length} bytes exceeds the maximum of ${MAX_REQUEST_BYTES}`;
}

/** One request in flight; reused across requests so the hot path allocates no closures. */
class Request {
  readonly conn: Connection;
  handleHi = 0;
  handleLo = 0;
  /** Offset of a READ (its structured reply names it). */
  offset = 0;
  /** The command, and when it was handed to the export (performance.now(), ms), for the export's latency figures. */
  command = 0;
  startedMs = 0;
  /** Length of a BLOCK_STATUS query, and the most descriptors its reply may hold (the export's answer is checked against both). */
  statusLength = 0;
  statusMaxRuns = 0;
  /** Reply of a READ: header followed by the data; the start of `pooled`. */
  reply: Buffer | null = null;
  /**
   * The whole pooled buffer a READ's `reply` or a WRITE's payload lies in: it goes back to the
   * pool once the reply is flushed (a read) or the export is done with the payload (a write).
   */
  pooled: Buffer | null = null;
  /** Bytes of the byte budget this request holds (its WRITE payload or READ reply buffer); 0 once released. */
  chargedBytes = 0;
  /** Typed as the export contract says; `complete` still converts anything else that arrives at run time. */
  readonly done: (error: KeelsonError | null) => void;
  /** The socket handed the reply to the kernel, or gave up on it: its buffer's bytes go back to the budget. */
  readonly flushed: () => void;
  /** Completion of a BLOCK_STATUS query. */
  readonly statusDone: BlockStatusCallback;

  constructor(conn: Connection) {
    this.conn = conn;
    this.done = (error) => this.conn.complete(this, error);
    this.statusDone = (error, runs) => this.conn.completeBlockStatus(this, error, runs);
    this.flushed = () => this.conn.replyFlushed(this);
  }
}

type ParseState = "header" | "payload" | "discard";

/** A WRITE whose payload is being received. */
interface PendingWrite {
  req: Request;
  offset: number;
  fua: boolean;
  /** A KEELSON_ACTIVITY save rather than a WRITE. */
  activity: boolean;
  /** The payload: in place in a socket chunk, or in the request's pooled buffer once it spans chunks. */
  data: Buffer;
  /** Bytes of the payload, and how many of them have arrived. */
  length: number;
  filled: number;
  /** Set when the request is refused once its payload is consumed. */
  refusal: Refusal | null;
}

/** Why the NBD layer refuses a request before the export sees it (an error path: allocating here is fine). */
interface Refusal {
  errno: number;
  code: ErrorCode;
  detail: string;
}

/**
 * The transmission phase of one NBD connection: parses requests from the
 * byte stream, runs them against the export concurrently, and replies in
 * completion order (the handle tells the client which request a reply ends).
 *
 * Memory is bounded whatever the client sends: parsing stops at a request
 * header (the socket is paused and the rest of the chunk kept) while
 * {@link MAX_INFLIGHT_PER_CONNECTION} requests run, while replies back up in
 * the socket (the client does not read them), while this connection holds
 * its share of the daemon's byte budget, or while the budget cannot give the
 * next request's payload or reply buffer; it goes on when that clears.
 */
export class Connection implements BudgetWaiter, AdmissionWaiter {
  readonly socket: Socket;
  readonly export: NbdExport;
  /** Whether the client negotiated structured replies (every reply is then a chunk, errors carry a message). */
  readonly structuredReplies: boolean;
  /** The id of base:allocation when the client selected it (NBD_CMD_BLOCK_STATUS is refused otherwise). */
  readonly allocationContextId: number | null;
  /** Where a READ's data starts in its reply buffer: after the simple header, or after the chunk header and offset. */
  readonly #dataAt: number;
  /** The daemon-wide budget that request payloads and reply buffers are taken from before they are allocated. */
  readonly #budget: ByteBudget;
  /** Where READ reply and WRITE payload buffers come from and go back to (the server's, shared by its connections). */
  readonly #buffers: RequestBuffers;
  /** Bytes received but not parsed yet: a partial header, or the rest of a chunk when parsing stopped. */
  #carry: Buffer | null = null;
  /**
   * The bytes being parsed are a view of the socket's read buffer (see read-buffer-socket.ts), which the
   * next read overwrites: a payload is copied out, never used in place, and what is left is copied.
   */
  #borrowed = false;
  /** Whether `#parse` runs now (a completion inside it must not start a second, nested parse). */
  #parsing = false;
  /** Budget bytes this connection holds: its requests' charges and `#reservedBytes`. */
  #heldBytes = 0;
  /** Budget bytes taken for the next request header, not yet charged to its request. */
  #reservedBytes = 0;
  /** Bytes the next request header waits for in the budget's queue; 0 when not waiting. */
  #waitingBytes = 0;
  /** The next request would take this connection past its share of the budget: wait for its own releases. */
  #overShare = false;
  /** The export's front scheduling, when it has one. */
  readonly #admission: RequestAdmission | null;
  /** The next request waits for its place at the front. */
  #awaitingAdmission = false;
  /** The front let the next request start (its turn came), and no header has taken that turn yet. */
  #turnHeld = false;
  #state: ParseState = "header";
  /** The WRITE whose payload is being received. */
  #pendingWrite: PendingWrite | null = null;
  #discardLeft = 0;
  #inflight = 0;
  #free: Request[] = [];
  #paused = false;
  /** The socket reading into the shared read buffer, when it is one (see read-buffer-socket.ts). */
  readonly #input: ReadBufferSocket | null;
  /** The client ended its side (only seen on an input socket, which is half-open: see `#endIfServed`). */
  #peerEnded = false;
  #draining = false;
  /**
   * Replies of this turn of the event loop not yet handed to the socket: they leave together when
   * the turn ends, in one write (io_uring completions are reaped in batches, so one turn often
   * answers many requests). Bounded by the requests parsed in one turn (one refused at once leaves
   * its place in flight before the flush): one received chunk's headers plus those in flight.
   */
  readonly #outbox: Buffer[] = [];
  /** For each reply in `#outbox`, what runs once the socket flushed it (a READ's charge going back), or null. */
  readonly #outboxFlushed: Array<(() => void) | null> = [];
  #flushQueued = false;
  #closing = false;
  #closed = false;
  readonly #onClosed: () => void;

  constructor(
    socket: Socket,
    handshake: HandshakeResult,
    budget: ByteBudget,
    replies: RequestBuffers,
    onClosed: () => void,
    input: ReadBufferSocket | null = null,
  ) {
    const leftover = handshake.leftover;
    this.socket = socket;
    this.#budget = budget;
    this.#buffers = replies;
    this.export = handshake.export;
    this.structuredReplies = handshake.structuredReplies;
    this.allocationContextId = handshake.allocationContextId;
    this.#admission = handshake.export.admission ?? null;
    this.#dataAt = this.structuredReplies ? CHUNK_HEADER_BYTES + OFFSET_DATA_PREFIX_BYTES : SIMPLE_REPLY_HEADER_BYTES;
    assert.ok(this.#dataAt <= REPLY_HEADER_ROOM_BYTES, "a reply header fits the room reply buffers keep for it");
    this.#onClosed = onClosed;
    socket.setNoDelay(true);
    this.#input = input;
    if (input) {
      assert.ok(input.socket === socket, "the read buffer is the served socket's");
      input.deliverTo((view) => this.#onBorrowed(view));
      socket.on("end", () => {
        this.#peerEnded = true;
        this.#endIfServed();
      });
    } else socket.on("data", (chunk: Buffer) => this.#onData(chunk));
    socket.on("drain", () => this.#onDrain());
    socket.on("close", () => this.#shutdown());
    socket.on("error", (e) => debug("socket error: %s", e.message));
    if (socket.destroyed) this.#shutdown();
    else if (leftover.length > 0) this.#onData(leftover);
  }

  /** The client is gone or asked to disconnect: what is still running finishes, nothing new starts. */
  get closing(): boolean {
    return this.#closing || this.#peerEnded;
  }

  /** Requests running now. */
  get inflight(): number {
    return this.#inflight;
  }

  /** Cuts the connection (server shutdown, forced volume delete). */
  destroy(): void {
    this.socket.destroy();
  }

  #onData(chunk: Buffer): void {
    // A carry is a partial header (under 28 bytes) or, once parsing stopped, what arrived since: at most one
    // chunk on a Node socket (it is paused then), under THROTTLED_CARRY_BYTES plus one 64 KiB read on an input socket.
    this.#carry = this.#carry ? Buffer.concat([this.#carry, chunk]) : chunk;
    this.#parse();
  }

  /** Bytes in the socket's read buffer: parsed where they lie; whatever must outlive this call is copied. */
  #onBorrowed(view: Buffer): void {
    if (this.#carry !== null || this.#parsing) return this.#onData(Buffer.from(view));
    this.#carry = view;
    this.#borrowed = true;
    try {
      this.#parse();
    } finally {
      this.#borrowed = false;
    }
    assert.ok(this.#carry === null || this.#carry.buffer !== view.buffer, "nothing keeps a view of the read buffer");
    // In the middle of a payload the next read takes the rest of it, and nothing past it to copy:
    // straight into the payload's own buffer once it has one (a copy of ~1 MiB per large write less).
    const w = this.#pendingWrite;
    const input = this.#input as ReadBufferSocket;
    const midPayload = this.#state === "payload" && w !== null && this.#carry === null;
    if (midPayload && w.filled > 0 && w.req.pooled !== null) input.readInto(w.data.subarray(w.filled));
    else input.nextReadBytes = midPayload ? w.length - w.filled : SMALL_READ_BYTES;
  }

  /** Parses the carried bytes until they run out or a request must wait; keeps what is left. */
  #parse(): void {
    const buf = this.#carry;
    if (this.#parsing || buf === null) return;
    this.#parsing = true;
    this.#carry = null;
    let at = 0;
    while (at < buf.length && !this.#closing) {
      if (this.#state === "header") {
        if (buf.length - at < REQUEST_HEADER_BYTES || !this.#mayStart(buf, at)) break;
        this.#header(buf, at);
        at += REQUEST_HEADER_BYTES;
      } else if (this.#state === "payload") {
        at = this.#payload(buf, at);
      } else {
        const n = Math.min(this.#discardLeft, buf.length - at);
        this.#discardLeft -= n;
        at += n;
        if (this.#discardLeft === 0) this.#state = "header";
      }
    }
    if (at < buf.length && !this.#closing) {
      // A partial header is copied so that it does not keep the whole chunk alive.
      const rest = buf.subarray(at);
      this.#carry = rest.length < REQUEST_HEADER_BYTES || this.#borrowed ? Buffer.from(rest) : rest;
    }
    this.#parsing = false;
    this.#throttle();
  }

  /**
   * Whether the request whose header is at `at` may start now: the
   * connection is not throttled and the budget gave its buffer's bytes (kept
   * in `#reservedBytes` for `#header`). When the budget cannot, the
   * connection queues for them and `onBudget` resumes it.
   */
  #mayStart(buf: Buffer, at: number): boolean {
    if (this.#stopped()) return false;
    // The turn first: a request waiting for its turn holds no budget bytes (others' large requests may need them).
    return this.#admitted(buf, at) && this.#budgetFor(buf, at);
  }

  /** Whether the request at `at` has its buffer's bytes (kept in `#reservedBytes`); else it waits for them. */
  #budgetFor(buf: Buffer, at: number): boolean {
    const need = this.#bufferBytes(buf, at);
    if (need === 0 || this.#reservedBytes > 0) return true;
    if (this.#heldBytes > 0 && this.#heldBytes + need > this.#budget.shareBytes) {
      this.#overShare = true;
      return false;
    }
    if (!this.#budget.acquire(need, this)) {
      this.#waitingBytes = need;
      return false;
    }
    this.#reservedBytes = need;
    this.#heldBytes += need;
    return true;
  }

  /**
   * Whether the front lets the request at `at` start; else the connection
   * waits for its turn and `onAdmitted` resumes it. The front is told whether
   * another request of this connection was received behind it: a client
   * whose requests pile up is held back by the daemon, one that sends them
   * one at a time is not.
   */
  #admitted(buf: Buffer, at: number): boolean {
    if (this.#admission === null || this.#turnHeld) return true;
    if (this.#admission.enter(this, this.#anotherBehind(buf, at))) return true;
    this.#awaitingAdmission = true;
    return false;
  }

  /** Whether a whole request header follows the request at `at` (past its payload, for a WRITE) in what was received. */
  #anotherBehind(buf: Buffer, at: number): boolean {
    const type = buf.readUInt16BE(at + 6);
    const payload = type === Command.WRITE || type === Command.KEELSON_ACTIVITY ? buf.readUInt32BE(at + 24) : 0;
    return buf.length - at - REQUEST_HEADER_BYTES - payload >= REQUEST_HEADER_BYTES;
  }

  /** The next request's turn came (AdmissionWaiter). */
  onAdmitted(): void {
    this.#awaitingAdmission = false;
    if (this.#closing) return;
    this.#turnHeld = true;
    this.#throttle();
  }

  /** The next request cannot start whatever it is: too many run, replies back up, or it waits for budget or the front. */
  #stopped(): boolean {
    return (
      this.#inflight >= MAX_INFLIGHT_PER_CONNECTION ||
      this.#draining ||
      this.#waitingBytes > 0 ||
      this.#overShare ||
      this.#awaitingAdmission
    );
  }

  /** Buffer bytes the request at `at` will allocate: its WRITE payload or READ reply; 0 for one refused unread. */
  #bufferBytes(buf: Buffer, at: number): number {
    if (buf.readUInt32BE(at) !== REQUEST_MAGIC) return 0;
    const type = buf.readUInt16BE(at + 6);
    const length = buf.readUInt32BE(at + 24);
    if (length === 0) return 0;
    // A READ holds a pooled buffer of its size class (up to twice its length): charged for what it holds.
    if (type === Command.READ) return length > MAX_REQUEST_BYTES ? 0 : RequestBuffers.bytesFor(length);
    // A WRITE's payload may need a pooled buffer too (when it spans socket chunks): charged the same.
    if (type === Command.WRITE) return length > MAX_REQUEST_BYTES ? 0 : RequestBuffers.bytesFor(length);
    if (type === Command.KEELSON_ACTIVITY) return length > MAX_ACTIVITY_PAYLOAD_BYTES ? 0 : RequestBuffers.bytesFor(length);
    if (type === Command.BLOCK_STATUS) return this.allocationContextId === null ? 0 : BLOCK_STATUS_REPLY_MAX_BYTES;
    return 0;
  }

  /** The budget gave the bytes the next header waited for (BudgetWaiter). */
  onBudget(): void {
    this.#heldBytes += this.#waitingBytes;
    this.#reservedBytes = this.#waitingBytes;
    this.#waitingBytes = 0;
    if (this.#closing) return this.#releaseReserved();
    this.#throttle();
  }

  #releaseReserved(): void {
    const bytes = this.#reservedBytes;
    this.#reservedBytes = 0;
    this.#release(bytes);
  }

  /** Gives `bytes` back to the budget; the connection may then start what waited for its share. */
  #release(bytes: number): void {
    if (bytes === 0) return;
    this.#heldBytes -= bytes;
    this.#overShare = false;
    this.#budget.release(bytes);
    this.#throttle();
  }

  /** Budget bytes this connection holds now. */
  get heldBytes(): number {
    return this.#heldBytes;
  }

  #take(): Request {
    return this.#free.pop() ?? new Request(this);
  }

  #header(buf: Buffer, at: number): void {
    if (buf.readUInt32BE(at) !== REQUEST_MAGIC) {
      // Without a valid header we cannot find the next one: the protocol says hard disconnect.
      debug("bad request magic; closing");
      this.#closing = true;
      this.#flushReplies(); // the replies of requests before the bad one still go out
      this.socket.destroy();
      return;
    }
    const flags = buf.readUInt16BE(at + 4);
    const type = buf.readUInt16BE(at + 6);
    const req = this.#take();
    req.chargedBytes = this.#reservedBytes;
    this.#reservedBytes = 0;
    this.#turnHeld = false;
    req.handleHi = buf.readUInt32BE(at + 8);
    req.handleLo = buf.readUInt32BE(at + 12);
    const offset = buf.readUInt32BE(at + 16) * 2 ** 32 + buf.readUInt32BE(at + 20);
    const length = buf.readUInt32BE(at + 24);
    this.#inflight++;
    req.command = type;
    req.startedMs = performance.now();
    const allowed = FLAGS_BY_COMMAND[type];
    if (type === Command.WRITE) return this.#startWrite(req, flags, offset, length);
    if (type === Command.KEELSON_ACTIVITY) return this.#startActivity(req, flags, offset, length);
    if (allowed === undefined) return this.#refuse(req, Errno.EINVAL, "INVALID_ARGUMENT", `command ${type} is not supported`);
    if ((flags & ~allowed) !== 0) return this.#refuse(req, Errno.EINVAL, "INVALID_ARGUMENT", badFlags(type, flags));
    this.#dispatch(req, type, flags, offset, length);
  }

  #dispatch(req: Request, type: number, flags: number, offset: number, length: number): void {
    const exp = this.export;
    switch (type) {
      case Command.READ:
        if (length > MAX_REQUEST_BYTES) return this.#refuse(req, Errno.EINVAL, "INVALID_ARGUMENT", tooLarge(length));
        if (offset + length > exp.sizeBytes)
          return this.#refuse(req, Errno.EINVAL, "OUT_OF_RANGE", this.#pastEnd(offset, length));
        // A structured data chunk must hold at least one byte: an empty read is answered with NONE.
        // Each export call in a try: one that throws instead of calling back is answered as failed
        // (inline, not through a helper taking a closure: no allocation per request).
        if (length === 0 && this.structuredReplies) {
          try {
            return exp.read(offset, 0, EMPTY, 0, req.done);
          } catch (error) {
            return this.complete(req, error);
          }
        }
        req.offset = offset;
        if (length === 0) {
          // A simple reply's header alone (uncharged, as its length is 0): not worth a pooled buffer.
          req.reply = Buffer.allocUnsafe(this.#dataAt);
        } else {
          req.pooled = this.#buffers.take(length);
          req.reply = req.pooled.subarray(0, this.#dataAt + length);
        }
        try {
          return exp.read(offset, length, req.reply, this.#dataAt, req.done);
        } catch (error) {
          return this.complete(req, error);
        }
      case Command.FLUSH:
        try {
          return exp.flush(req.done);
        } catch (error) {
          return this.complete(req, error);
        }
      case Command.TRIM:
      case Command.WRITE_ZEROES:
        return this.#zero(req, type, flags, offset, length);
      case Command.BLOCK_STATUS:
        return this.#blockStatus(req, flags, offset, length);
      case Command.DISC:
        this.#inflight--;
        this.#recycle(req);
        return this.#disconnect();
    }
  }

  #zero(req: Request, type: number, flags: number, offset: number, length: number): void {
    const exp = this.export;
    if (exp.readOnly) return this.#refuse(req, Errno.EPERM, "READ_ONLY", `export ${exp.name} is read-only`);
    if (offset + length > exp.sizeBytes) {
      return this.#refuse(
        req,
        type === Command.TRIM ? Errno.EINVAL : Errno.ENOSPC,
        "OUT_OF_RANGE",
        this.#pastEnd(offset, length),
      );
    }
    const noHole = (flags & CommandFlag.NO_HOLE) !== 0;
    // FAST_ZERO asks us to fail rather than write zeros slowly; only NO_HOLE zeroing is slow here.
    if (noHole && (flags & CommandFlag.FAST_ZERO) !== 0) {
      return this.#refuse(req, Errno.ENOTSUP, "INVALID_ARGUMENT", "fast zeroing without holes is not possible");
    }
    const options = { trim: type === Command.TRIM, noHole, fua: (flags & CommandFlag.FUA) !== 0 };
    try {
      exp.zero(offset, length, options, req.done);
    } catch (error) {
      this.complete(req, error);
    }
  }

  #blockStatus(req: Request, flags: number, offset: number, length: number): void {
    const exp = this.export;
    if (this.allocationContextId === null) {
      const detail = "NBD_CMD_BLOCK_STATUS needs base:allocation selected with NBD_OPT_SET_META_CONTEXT";
      return this.#refuse(req, Errno.EINVAL, "INVALID_ARGUMENT", detail);
    }
    if (length === 0) return this.#refuse(req, Errno.EINVAL, "INVALID_ARGUMENT", "a block status query of 0 bytes");
    if (offset + length > exp.sizeBytes) return this.#refuse(req, Errno.EINVAL, "OUT_OF_RANGE", this.#pastEnd(offset, length));
    req.statusLength = length;
    req.statusMaxRuns = (flags & CommandFlag.REQ_ONE) !== 0 ? 1 : MAX_BLOCK_STATUS_DESCRIPTORS;
    if (exp.blockStatus === undefined) return this.completeBlockStatus(req, null, [{ lengthBytes: length, status: "data" }]);
    try {
      exp.blockStatus(offset, length, req.statusMaxRuns, req.statusDone);
    } catch (error) {
      this.completeBlockStatus(req, error, null);
    }
  }

  /**
   * Completion of a BLOCK_STATUS query: one BLOCK_STATUS chunk (DONE) with a
   * descriptor per run. An answer the protocol forbids (no run, an empty
   * run, more runs than asked, or more bytes than asked) is a bug below and
   * is sent as INTERNAL rather than passed to the client.
   */
  completeBlockStatus(req: Request, error: unknown, runs: readonly AllocationRun[] | null): void {
    if (error !== null && error !== undefined) return this.complete(req, error);
    const contextId = this.allocationContextId;
    let bad = runs === null || runs.length === 0 || runs.length > req.statusMaxRuns || contextId === null;
    let total = 0;
    for (const run of runs ?? []) {
      if (!(run.lengthBytes > 0)) bad = true;
      total += run.lengthBytes;
    }
    if (bad || total > req.statusLength || runs === null || contextId === null) {
      const detail = `the export answered a block status query of ${req.statusLength} bytes with ${runs?.length ?? 0} runs of ${total} bytes`;
      return this.complete(req, new KeelsonError({ code: "INTERNAL", message: detail }));
    }
    const payloadBytes = 4 + 8 * runs.length;
    const buf = Buffer.allocUnsafe(CHUNK_HEADER_BYTES + payloadBytes);
    writeChunkHeader(buf, 0, ReplyFlag.DONE, ReplyType.BLOCK_STATUS, req.handleHi, req.handleLo, payloadBytes);
    buf.writeUInt32BE(contextId, CHUNK_HEADER_BYTES);
    let at = CHUNK_HEADER_BYTES + 4;
    for (const run of runs) {
      buf.writeUInt32BE(run.lengthBytes, at);
      buf.writeUInt32BE(run.status === "hole" ? AllocationState.HOLE | AllocationState.ZERO : 0, at + 4);
      at += 8;
    }
    this.export.observe?.(req.command, performance.now() - req.startedMs);
    // Like a READ's reply, its charge goes back once the socket flushed it, not when it is queued.
    this.#sendData(req, buf);
  }

  #startWrite(req: Request, flags: number, offset: number, length: number): void {
    const exp = this.export;
    if (length > MAX_REQUEST_BYTES) {
      // Too large to buffer: skip the payload and refuse it.
      this.#discardLeft = length;
      this.#state = length > 0 ? "discard" : "header";
      return this.#refuse(req, Errno.EINVAL, "INVALID_ARGUMENT", tooLarge(length));
    }
    let refusal: Refusal | null = null;
    if ((flags & ~CommandFlag.FUA) !== 0) {
      refusal = { errno: Errno.EINVAL, code: "INVALID_ARGUMENT", detail: badFlags(Command.WRITE, flags) };
    } else if (exp.readOnly) refusal = { errno: Errno.EPERM, code: "READ_ONLY", detail: `export ${exp.name} is read-only` };
    else if (offset + length > exp.sizeBytes) {
      refusal = { errno: Errno.ENOSPC, code: "OUT_OF_RANGE", detail: this.#pastEnd(offset, length) };
    }
    this.#awaitPayload(
      { req, offset, fua: (flags & CommandFlag.FUA) !== 0, activity: false, data: EMPTY, length: 0, filled: 0, refusal },
      length,
    );
  }

  /** KEELSON_ACTIVITY: a payload like WRITE's, for exports that keep a write-intent log (replicas). */
  #startActivity(req: Request, flags: number, offset: number, length: number): void {
    if (length > MAX_ACTIVITY_PAYLOAD_BYTES) {
      this.#discardLeft = length;
      this.#state = length > 0 ? "discard" : "header";
      const detail = `an activity log save of ${length} bytes exceeds the maximum of ${MAX_ACTIVITY_PAYLOAD_BYTES}`;
      return this.#refuse(req, Errno.EINVAL, "INVALID_ARGUMENT", detail);
    }
    let refusal: Refusal | null = null;
    if (this.export.saveActivity === undefined) {
      refusal = { errno: Errno.EINVAL, code: "INVALID_ARGUMENT", detail: `command ${Command.KEELSON_ACTIVITY} is not supported` };
    } else if (flags !== 0 || offset !== 0) {
      refusal = { errno: Errno.EINVAL, code: "INVALID_ARGUMENT", detail: "an activity log save takes no flags and offset 0" };
    }
    this.#awaitPayload({ req, offset, fua: false, activity: true, data: EMPTY, length: 0, filled: 0, refusal }, length);
  }

  #awaitPayload(w: PendingWrite, length: number): void {
    // The buffer is taken once the payload proves to span chunks: one wholly in a chunk is used in place.
    w.length = length;
    this.#pendingWrite = w;
    if (length === 0) return this.#finishPayload();
    this.#state = "payload";
  }

  #payload(buf: Buffer, at: number): number {
    const w = this.#pendingWrite as PendingWrite;
    const need = w.length - w.filled;
    const avail = buf.length - at;
    if (w.filled === 0 && avail >= need && !this.#borrowed) {
      // The whole payload is in this chunk: use it in place.
      w.data = buf.subarray(at, at + need);
      w.filled = need;
    } else {
      if (w.filled === 0) {
        const pooled = this.#buffers.take(w.length);
        w.req.pooled = pooled;
        w.data = pooled.subarray(REPLY_HEADER_ROOM_BYTES, REPLY_HEADER_ROOM_BYTES + w.length);
      }
      const n = Math.min(need, avail);
      // A read made straight into the payload's buffer (see #onBorrowed) is where it belongs already.
      const inPlace = buf.buffer === w.data.buffer && buf.byteOffset + at === w.data.byteOffset + w.filled;
      if (!inPlace) buf.copy(w.data, w.filled, at, at + n);
      w.filled += n;
      if (w.filled < w.length) return at + n;
    }
    this.#state = "header";
    this.#finishPayload();
    return at + need;
  }

  #finishPayload(): void {
    const w = this.#pendingWrite as PendingWrite;
    this.#pendingWrite = null;
    this.#state = "header";
    const refusal = w.refusal;
    if (refusal) return this.#refuse(w.req, refusal.errno, refusal.code, refusal.detail);
    // A write's time starts once its payload is in: how fast the client sent it is not the volume's latency.
    w.req.startedMs = performance.now();
    try {
      if (w.activity) (this.export.saveActivity as NonNullable<NbdExport["saveActivity"]>)(w.data, w.req.done);
      else this.export.write(w.offset, w.data, w.fua, w.req.done);
    } catch (error) {
      this.complete(w.req, error);
    }
  }

  /**
   * Completion of an export operation for `req`. `error` is whatever reached
   * the callback: anything but null is a failure, and one that is not a
   * KeelsonError (a bug below) becomes INTERNAL, so it is never written as
   * errno 0, which the client would read as success.
   */
  complete(req: Request, error: unknown): void {
    this.export.observe?.(req.command, performance.now() - req.startedMs);
    if (error !== null && error !== undefined) {
      const typed = asWireError(error);
      debug("request failed: %s %s", typed.code, typed.message);
      // A failed request's pooled buffer (a read's reply, a write's payload) is not reused: whatever failed below might still hold it.
      req.reply = null;
      req.pooled = null;
      return this.#refuse(req, errnoOf(typed.code), typed.code, typed.message);
    }
    const reply = req.reply;
    if (reply === null) return this.#replyDone(req);
    req.reply = null;
    if (this.structuredReplies) {
      // One OFFSET_DATA chunk holds the whole read; it is final because the data is complete before it is sent.
      const payloadBytes = reply.length - CHUNK_HEADER_BYTES;
      writeChunkHeader(reply, 0, ReplyFlag.DONE, ReplyType.OFFSET_DATA, req.handleHi, req.handleLo, payloadBytes);
      reply.writeUInt32BE(Math.floor(req.offset / 2 ** 32), CHUNK_HEADER_BYTES);
      reply.writeUInt32BE(req.offset >>> 0, CHUNK_HEADER_BYTES + 4);
    } else {
      this.#writeSimpleHeader(reply, req, 0);
    }
    this.#sendData(req, reply);
  }

  #writeSimpleHeader(buf: Buffer, req: Request, errno: number): void {
    buf.writeUInt32BE(SIMPLE_REPLY_MAGIC, 0);
    buf.writeUInt32BE(errno, 4);
    buf.writeUInt32BE(req.handleHi, 8);
    buf.writeUInt32BE(req.handleLo, 12);
  }

  /** Success without data: a simple reply, or a NONE chunk with the DONE flag. */
  #replyDone(req: Request): void {
    if (this.structuredReplies) {
      const buf = Buffer.allocUnsafe(CHUNK_HEADER_BYTES);
      writeChunkHeader(buf, 0, ReplyFlag.DONE, ReplyType.NONE, req.handleHi, req.handleLo, 0);
      return this.#send(req, buf);
    }
    const buf = Buffer.allocUnsafe(SIMPLE_REPLY_HEADER_BYTES);
    this.#writeSimpleHeader(buf, req, 0);
    this.#send(req, buf);
  }

  /**
   * Failure: a simple reply carries only `errno`; an ERROR chunk also carries
   * `CODE: detail`, so a keelson peer gets the error's identity back (several
   * codes share one errno) and a human sees why.
   */
  #refuse(req: Request, errno: number, code: ErrorCode, detail: string): void {
    if (this.structuredReplies) return this.#send(req, errorChunk(req.handleHi, req.handleLo, errno, code, detail));
    const buf = Buffer.allocUnsafe(SIMPLE_REPLY_HEADER_BYTES);
    this.#writeSimpleHeader(buf, req, errno);
    this.#send(req, buf);
  }

  #pastEnd(offset: number, length: number): string {
    return `${length} bytes at offset ${offset} reach past the end of export ${this.export.name} (${this.export.sizeBytes} bytes)`;
  }

  /** Sends a reply without data; the request's payload (if any) was used, so its charge goes back now. */
  #send(req: Request, buf: Buffer): void {
    this.#inflight--;
    const charged = req.chargedBytes;
    req.chargedBytes = 0;
    if (req.pooled !== null) {
      // A write's payload, written (a failure below dropped it in `complete`: it might still be held there).
      this.#buffers.give(req.pooled);
      req.pooled = null;
    }
    this.#recycle(req);
    this.#queueReply(buf, null);
    this.#release(charged);
    this.#throttle();
    if (this.#closing && this.#inflight === 0) this.#finishClose();
  }

  /** Sends a READ's reply buffer; its charge goes back once the socket flushed it (`replyFlushed`). */
  #sendData(req: Request, reply: Buffer): void {
    this.#inflight--;
    if (this.socket.destroyed) this.replyFlushed(req);
    else this.#queueReply(reply, req.flushed);
    this.#throttle();
    if (this.#closing && this.#inflight === 0) this.#finishClose();
  }

  #queueReply(buf: Buffer, flushed: (() => void) | null): void {
    this.#outbox.push(buf);
    this.#outboxFlushed.push(flushed);
    if (this.#flushQueued) return;
    this.#flushQueued = true;
    process.nextTick(this.#flushReplies);
  }

  /** Hands this turn's replies to the socket: one write, or for several a corked run that leaves as one writev. */
  readonly #flushReplies = (): void => {
    this.#flushQueued = false;
    const n = this.#outbox.length;
    if (n === 0) return;
    let ok = true;
    if (this.socket.destroyed) {
      for (const flushed of this.#outboxFlushed) flushed?.();
    } else if (n === 1) {
      ok = this.socket.write(this.#outbox[0] as Buffer, this.#outboxFlushed[0] ?? undefined);
    } else {
      this.socket.cork();
      for (let i = 0; i < n; i++) ok = this.socket.write(this.#outbox[i] as Buffer, this.#outboxFlushed[i] ?? undefined);
      this.socket.uncork();
    }
    this.#outbox.length = 0;
    this.#outboxFlushed.length = 0;
    if (!ok) {
      this.#draining = true;
      this.#throttle();
    }
  };

  /** A READ reply left the process (or the socket was destroyed with it): its bytes go back to the budget. */
  replyFlushed(req: Request): void {
    const charged = req.chargedBytes;
    req.chargedBytes = 0;
    if (req.pooled !== null) {
      this.#buffers.give(req.pooled);
      req.pooled = null;
    }
    this.#recycle(req);
    this.#release(charged);
  }

  #recycle(req: Request): void {
    if (this.#free.length < MAX_FREE_REQUESTS) this.#free.push(req);
  }

  /**
   * Stops reading while a request cannot start (too many run, replies back
   * up, no budget); when that clears, parses what was kept first and reads
   * again only once it is used up.
   */
  #throttle(): void {
    if (this.#closing || this.#parsing) return;
    const stop = this.#stopped();
    if (!stop && this.#carry !== null && this.#carry.length >= REQUEST_HEADER_BYTES) return this.#parse();
    if (this.#input !== null) {
      // Pausing a socket that reads into the shared buffer stops reading the kernel at once, and a
      // connection that reads nothing does not see its client hang up (it stays open, not closing, and
      // a new connection to the export would not wait for its writes). So it reads on, keeping what
      // arrives, until it keeps THROTTLED_CARRY_BYTES, as Node's own sockets buffer up to a limit.
      this.#setPaused(stop && (this.#carry?.length ?? 0) >= THROTTLED_CARRY_BYTES);
      return this.#endIfServed();
    }
    this.#setPaused(stop);
  }

  #setPaused(paused: boolean): void {
    if (paused === this.#paused) return;
    this.#paused = paused;
    if (paused) this.socket.pause();
    else this.socket.resume();
  }

  /**
   * The client ended its side: a half-close after NBD_CMD_DISC (libnbd), or a hang-up. What it sent
   * before is served first (a server handles the requests outstanding at DISC), and once nothing left
   * can still run, this side ends too. Node would end it at once (dropping what is kept unparsed), so
   * input sockets are half-open and end here.
   */
  #endIfServed(): void {
    if (!this.#peerEnded || this.#closing || this.#parsing || this.#waitingBytes > 0 || this.#awaitingAdmission) return;
    // A write whose payload will never arrive counts in flight but never runs.
    if (this.#inflight - (this.#pendingWrite === null ? 0 : 1) > 0) return;
    // A whole header still kept is parsed once the connection may go on; a partial one never completes.
    if (this.#state === "header" && this.#carry !== null && this.#carry.length >= REQUEST_HEADER_BYTES) return;
    this.#closing = true;
    this.#finishClose();
  }

  #onDrain(): void {
    this.#draining = false;
    this.#throttle();
  }

  /** NBD_CMD_DISC: finish what runs, then close. */
  #disconnect(): void {
    this.#closing = true;
    this.socket.pause();
    if (this.#inflight === 0) this.#finishClose();
  }

  #finishClose(): void {
    this.#flushReplies();
    this.socket.end();
    // Reading on (what arrives is dropped) so the client's end of the connection is seen and it closes:
    // a socket reading into the shared buffer stops reading the kernel outright while paused.
    this.socket.resume();
    this.#shutdown();
  }

  /** Releases the export once nothing runs any more. */
  #shutdown(): void {
    this.#closing = true;
    this.#carry = null;
    if (this.#waitingBytes > 0) {
      this.#waitingBytes = 0;
      this.#budget.cancel(this);
    }
    this.#releaseReserved();
    if (this.#awaitingAdmission) {
      this.#awaitingAdmission = false;
      (this.#admission as RequestAdmission).cancel(this);
    }
    if (this.#pendingWrite && this.socket.destroyed) {
      // The client vanished mid-payload: that write never started, so it never completes.
      const req = this.#pendingWrite.req;
      this.#pendingWrite = null;
      this.#inflight--;
      this.replyFlushed(req);
    }
    if (this.#closed || this.#inflight > 0) return;
    this.#closed = true;
    this.export.close();
    this.#onClosed();
  }
}
