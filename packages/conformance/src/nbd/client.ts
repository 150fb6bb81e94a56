// A plain NBD client: fixed newstyle handshake, simple replies, many requests
// in flight matched to out-of-order replies by handle. Whatever the server
// does, a request settles: with its reply, or with "closed" once the socket
// is gone. Nothing the server sends makes it allocate more than it asked for.

import assert from "node:assert/strict";
import type net from "node:net";
import { performance } from "node:perf_hooks";
import { ConformanceError } from "../errors.js";
import type { ByteQueue } from "./byte-queue.js";
import { connectAndNegotiate } from "./connect.js";
import {
  COMMAND,
  COMMAND_FLAG,
  type Command,
  MAX_REQUEST_BYTES,
  NBD_ERRNO,
  REQUEST_HEADER_BYTES,
  REQUEST_MAGIC,
  SIMPLE_REPLY_HEADER_BYTES,
  SIMPLE_REPLY_MAGIC,
  STRUCTURED_REPLY_MAGIC,
  TRANSMISSION_FLAG,
  writeUInt64,
} from "./protocol.js";
import type { NbdConnection, NbdReplyError } from "./types.js";
import { parseNbdUri } from "./uri.js";

/** Requests one connection keeps in flight; further calls wait in FIFO order for a reply to free a slot. */
export const MAX_IN_FLIGHT = 128;
/** After NBD_CMD_DISC, how long the server gets to finish outstanding requests and close before the socket is destroyed. */
export const CLOSE_GRACE_MS = 1_000;
/** Unparsed bytes one connection may hold: one whole read reply plus slack; more means the server is flooding. */
export const MAX_BUFFERED_BYTES = MAX_REQUEST_BYTES + 1024 * 1024;

/** Options of {@link openNbd}. */
export interface OpenNbdOptions {
  /** Longest the connect and handshake may take; also the default for `requestTimeoutMs`. */
  timeoutMs: number;
  /**
   * Longest a request may wait for its reply before the connection is given up
   * (every pending request then settles "closed"). 0 waits forever. Default `timeoutMs`.
   */
  requestTimeoutMs?: number;
}

/** An open connection as {@link openNbd} returns it: the {@link NbdConnection} contract plus its lifecycle. */
export interface NbdClientConnection extends NbdConnection {
  /** The transmission flags the server sent (TRANSMISSION_FLAG bits): read-only, flush, FUA, multi-conn. */
  readonly transmissionFlags: number;
  /** Why the connection ended, once it has ("server closed the connection", "no reply within 30000 ms"). */
  readonly closeReason: string | undefined;
  /** Resolves once the socket is closed and every request has settled. Never rejects. */
  readonly whenClosed: Promise<void>;
  /** close() and wait for {@link whenClosed}. */
  [Symbol.asyncDispose](): Promise<void>;
}

type Pending =
  | {
      command: typeof COMMAND.READ;
      lengthBytes: number;
      sentAtMs: number;
      resolve: (r: Buffer | { error: NbdReplyError }) => void;
    }
  | { command: typeof COMMAND.WRITE | typeof COMMAND.FLUSH; sentAtMs: number; resolve: (r: NbdReplyError) => void };

function assertRange(offsetBytes: number, lengthBytes: number): void {
  assert.ok(Number.isSafeInteger(offsetBytes) && offsetBytes >= 0, `offset ${offsetBytes} is not a non-negative integer`);
  assert.ok(
    Number.isInteger(lengthBytes) && lengthBytes > 0 && lengthBytes <= MAX_REQUEST_BYTES,
    `length ${lengthBytes} is not 1..${MAX_REQUEST_BYTES}`,
  );
  assert.ok(Number.isSafeInteger(offsetBytes + lengthBytes), `offset ${offsetBytes} + length ${lengthBytes} overflows`);
}

class NbdClient implements NbdClientConnection {
  readonly sizeBytes: number;
  readonly transmissionFlags: number;
  readonly whenClosed: Promise<void>;
  readonly #socket: net.Socket;
  /** Reply bytes received and not yet parsed. */
  readonly #queue: ByteQueue;
  readonly #where: string;
  readonly #requestTimeoutMs: number;
  /** Requests sent and not yet answered, by handle, oldest first (Map keeps insertion order). */
  readonly #pending = new Map<number, Pending>();
  /** Calls waiting for a free slot, oldest first; each is told true (slot reserved for it) or false (closed). */
  #slotWaiters: ((granted: boolean) => void)[] = [];
  /** Slots handed to waiters that have not sent yet; counted against MAX_IN_FLIGHT. */
  #reserved = 0;
  /** Next handle to try; 0 is never used so that NBD_CMD_DISC's handle cannot collide. */
  #nextHandle = 1;
  /** close() was called: no new requests are sent. */
  #closing = false;
  /** The socket is gone and every pending request has settled "closed". */
  #socketClosed = false;
  /** NBD_CMD_DISC went out (after close(), once nothing was in flight). */
  #discSent = false;
  /** The first reason the connection ended; set once. */
  #closeReason: string | undefined;
  /** After close(): destroys the socket if the server has not closed it within CLOSE_GRACE_MS. */
  #closeTimer: NodeJS.Timeout | undefined;
  /** Checks the oldest pending request against requestTimeoutMs. */
  #watchdog: NodeJS.Timeout | undefined;
  /** Resolves whenClosed. */
  #resolveClosed: () => void = () => undefined;

  constructor(options: {
    socket: net.Socket;
    pending: ByteQueue;
    sizeBytes: number;
    transmissionFlags: number;
    where: string;
    requestTimeoutMs: number;
  }) {
    this.#socket = options.socket;
    this.#queue = options.pending;
    this.sizeBytes = options.sizeBytes;
    this.transmissionFlags = options.transmissionFlags;
    this.#where = options.where;
    this.#requestTimeoutMs = options.requestTimeoutMs;
    this.whenClosed = new Promise((resolve) => {
      this.#resolveClosed = resolve;
    });
    this.#socket.on("data", this.#onData);
    this.#socket.on("error", this.#onError);
    this.#socket.on("close", this.#onClose);
    if (this.#requestTimeoutMs > 0) {
      const everyMs = Math.min(1_000, Math.max(10, Math.floor(this.#requestTimeoutMs / 4)));
      this.#watchdog = setInterval(this.#checkStalled, everyMs).unref();
    }
    if (this.#socket.destroyed) this.#onClose();
    else this.#parseReplies();
  }

  get closed(): boolean {
    return this.#closing || this.#socketClosed;
  }

  get closeReason(): string | undefined {
    return this.#closeReason;
  }

  write(offsetBytes: number, data: Buffer, options?: { fua?: boolean }): Promise<NbdReplyError> {
    assertRange(offsetBytes, data.length);
    if ((this.transmissionFlags & TRANSMISSION_FLAG.READ_ONLY) !== 0) return Promise.resolve(NBD_ERRNO.EPERM);
    const fua = options?.fua === true;
    // The protocol forbids FUA unless the server offered it; sending the write without it would silently weaken it.
    if (fua && (this.transmissionFlags & TRANSMISSION_FLAG.SEND_FUA) === 0) return Promise.resolve(NBD_ERRNO.EINVAL);
    const flags = fua ? COMMAND_FLAG.FUA : 0;
    return this.#whenSlot<NbdReplyError>("closed", (resolve) => {
      this.#send({ command: COMMAND.WRITE, sentAtMs: 0, resolve }, flags, offsetBytes, data.length, data);
    });
  }

  read(offsetBytes: number, lengthBytes: number): Promise<Buffer | { error: NbdReplyError }> {
    assertRange(offsetBytes, lengthBytes);
    return this.#whenSlot<Buffer | { error: NbdReplyError }>({ error: "closed" }, (resolve) => {
      this.#send({ command: COMMAND.READ, lengthBytes, sentAtMs: 0, resolve }, 0, offsetBytes, lengthBytes, undefined);
    });
  }

  flush(): Promise<NbdReplyError> {
    if ((this.transmissionFlags & TRANSMISSION_FLAG.SEND_FLUSH) === 0) return Promise.resolve(NBD_ERRNO.EINVAL);
    return this.#whenSlot<NbdReplyError>("closed", (resolve) => {
      this.#send({ command: COMMAND.FLUSH, sentAtMs: 0, resolve }, 0, 0, 0, undefined);
    });
  }

  close(): void {
    if (this.closed) return;
    this.#closing = true;
    this.#closeReason ??= "closed by the client";
    this.#refuseWaiters();
    // Soft disconnect once every outstanding request has its reply: a server that reads NBD_CMD_DISC
    // while it still runs earlier requests may answer them ESHUTDOWN (nbdkit's parallel threads do).
    this.#disconnectWhenIdle();
    this.#closeTimer = setTimeout(() => this.#socket.destroy(), CLOSE_GRACE_MS).unref();
  }

  /** After close(): sends NBD_CMD_DISC and ends the socket once nothing is in flight (once). */
  #disconnectWhenIdle(): void {
    if (!this.#closing || this.#discSent || this.#pending.size > 0) return;
    this.#discSent = true;
    if (this.#socket.writable) {
      this.#socket.write(this.#header(COMMAND.DISC, 0, 0, 0, 0));
      this.#socket.end();
    }
  }

  async [Symbol.asyncDispose](): Promise<void> {
    this.close();
    await this.whenClosed;
  }

  /**
   * Sends through `issue` now when a slot is free (so a request made before
   * close() is still sent), else once a reply frees one, in call order;
   * settles with `closed` when the connection is gone first.
   */
  #whenSlot<T>(closed: T, issue: (resolve: (r: T) => void) => void): Promise<T> {
    if (this.closed) return Promise.resolve(closed);
    if (this.#slotWaiters.length === 0 && this.#pending.size + this.#reserved < MAX_IN_FLIGHT) return new Promise<T>(issue);
    return new Promise<boolean>((resolve) => this.#slotWaiters.push(resolve)).then((granted) => {
      if (granted) this.#reserved--;
      return granted && !this.closed ? new Promise<T>(issue) : closed;
    });
  }

  #releaseSlot(): void {
    const next = this.#slotWaiters.shift();
    if (next === undefined) return;
    this.#reserved++;
    next(true);
  }

  #refuseWaiters(): void {
    const waiters = this.#slotWaiters;
    this.#slotWaiters = [];
    for (const w of waiters) w(false);
  }

  #allocateHandle(): number {
    // At most MAX_IN_FLIGHT handles are in use, so this finds a free one within MAX_IN_FLIGHT + 1 tries.
    for (;;) {
      const handle = this.#nextHandle;
      this.#nextHandle = this.#nextHandle >= 0xffff_ffff ? 1 : this.#nextHandle + 1;
      if (!this.#pending.has(handle)) return handle;
    }
  }

  #header(command: Command, flags: number, handle: number, offsetBytes: number, lengthBytes: number): Buffer {
    const h = Buffer.allocUnsafe(REQUEST_HEADER_BYTES);
    h.writeUInt32BE(REQUEST_MAGIC, 0);
    h.writeUInt16BE(flags, 4);
    h.writeUInt16BE(command, 6);
    // Handles fit 32 bits; the high half of the 64-bit field is always zero.
    h.writeUInt32BE(0, 8);
    h.writeUInt32BE(handle, 12);
    writeUInt64(h, offsetBytes, 16);
    h.writeUInt32BE(lengthBytes, 24);
    return h;
  }

  #send(pending: Pending, flags: number, offsetBytes: number, lengthBytes: number, data: Buffer | undefined): void {
    const handle = this.#allocateHandle();
    pending.sentAtMs = performance.now();
    this.#pending.set(handle, pending);
    this.#socket.cork();
    this.#socket.write(this.#header(pending.command, flags, handle, offsetBytes, lengthBytes));
    if (data !== undefined) this.#socket.write(data);
    this.#socket.uncork();
  }

  /** Gives up the connection: every pending request settles "closed". */
  #fail(reason: string): void {
    this.#closeReason ??= reason;
    this.#socket.destroy();
  }

  readonly #onData = (chunk: Buffer): void => {
    if (this.#socketClosed) return;
    this.#queue.push(chunk);
    if (this.#queue.length > MAX_BUFFERED_BYTES) {
      this.#fail(`server sent more than ${MAX_BUFFERED_BYTES} bytes the client did not ask for`);
      return;
    }
    this.#parseReplies();
  };

  readonly #onError = (error: Error): void => {
    this.#closeReason ??= `socket error: ${error.message}`;
  };

  readonly #onClose = (): void => {
    if (this.#socketClosed) return;
    this.#socketClosed = true;
    this.#closeReason ??= "server closed the connection";
    clearTimeout(this.#closeTimer);
    clearInterval(this.#watchdog);
    this.#queue.clear();
    const pending = [...this.#pending.values()];
    this.#pending.clear();
    for (const p of pending) {
      if (p.command === COMMAND.READ) p.resolve({ error: "closed" });
      else p.resolve("closed");
    }
    this.#refuseWaiters();
    this.#resolveClosed();
  };

  readonly #checkStalled = (): void => {
    for (const oldest of this.#pending.values()) {
      const waitedMs = performance.now() - oldest.sentAtMs;
      if (waitedMs > this.#requestTimeoutMs) this.#fail(`no reply within ${this.#requestTimeoutMs} ms`);
      return;
    }
  };

  /** Parses every complete reply in the queue; stops at a partial one, fails the connection on nonsense. */
  #parseReplies(): void {
    while (!this.#socketClosed && this.#queue.length >= SIMPLE_REPLY_HEADER_BYTES) {
      const header = this.#queue.peek(SIMPLE_REPLY_HEADER_BYTES);
      const magic = header.readUInt32BE(0);
      if (magic !== SIMPLE_REPLY_MAGIC) {
        const what =
          magic === STRUCTURED_REPLY_MAGIC
            ? "a structured reply, which was never negotiated"
            : `reply magic 0x${magic.toString(16)}`;
        this.#fail(`protocol violation from ${this.#where}: ${what}`);
        return;
      }
      const error = header.readUInt32BE(4);
      const handle = header.readUInt32BE(12);
      const pending = header.readUInt32BE(8) === 0 ? this.#pending.get(handle) : undefined;
      if (pending === undefined) {
        this.#fail(
          `protocol violation from ${this.#where}: reply for handle 0x${header.toString("hex", 8, 16)}, which is not in flight`,
        );
        return;
      }
      // A simple reply carries data only for a successful read, and exactly the length asked.
      const dataBytes = pending.command === COMMAND.READ && error === 0 ? pending.lengthBytes : 0;
      if (this.#queue.length < SIMPLE_REPLY_HEADER_BYTES + dataBytes) return;
      this.#queue.skip(SIMPLE_REPLY_HEADER_BYTES);
      this.#pending.delete(handle);
      if (pending.command === COMMAND.READ) pending.resolve(error === 0 ? this.#queue.take(dataBytes) : { error });
      else pending.resolve(error);
      this.#releaseSlot();
      // The protocol says a client receiving ESHUTDOWN must disconnect softly.
      if (error === NBD_ERRNO.ESHUTDOWN) this.close();
      this.#disconnectWhenIdle();
    }
  }
}

/**
 * Opens `uri` (see parseNbdUri) and negotiates its export. Rejects with
 * ConformanceError: INVALID_ARGUMENT for a bad URI, TARGET_FAILED when the
 * server refuses, closes, breaks the protocol or does not finish the
 * handshake within `timeoutMs`, NOT_SUPPORTED for an oldstyle server.
 */
export async function openNbd(uri: string, options: OpenNbdOptions): Promise<NbdClientConnection> {
  assert.ok(Number.isFinite(options.timeoutMs) && options.timeoutMs > 0, `timeoutMs ${options.timeoutMs} is not positive`);
  const address = parseNbdUri(uri);
  const opened = await connectAndNegotiate(address, uri, options.timeoutMs);
  return new NbdClient({
    socket: opened.socket,
    pending: opened.pending,
    sizeBytes: opened.negotiated.sizeBytes,
    transmissionFlags: opened.negotiated.transmissionFlags,
    where: uri,
    requestTimeoutMs: options.requestTimeoutMs ?? options.timeoutMs,
  });
}

const ERRNO_NAMES: Readonly<Record<number, string>> = {
  1: "EPERM",
  5: "EIO",
  12: "ENOMEM",
  22: "EINVAL",
  28: "ENOSPC",
  75: "EOVERFLOW",
  95: "ENOTSUP",
  108: "ESHUTDOWN",
};

/** "EIO (5)", or "the connection closed" for "closed". */
export function describeNbdError(error: NbdReplyError): string {
  if (error === "closed") return "the connection closed";
  return `${ERRNO_NAMES[error] ?? "error"} (${error})`;
}

/** A read function that throws ConformanceError TARGET_FAILED instead of returning an error (for verification passes). */
export function nbdReader(
  connection: NbdConnection,
  where: string,
): (offsetBytes: number, lengthBytes: number) => Promise<Buffer> {
  return async (offsetBytes, lengthBytes) => {
    const result = await connection.read(offsetBytes, lengthBytes);
    if (Buffer.isBuffer(result)) return result;
    throw new ConformanceError({
      code: "TARGET_FAILED",
      message: `read of ${lengthBytes} bytes at offset ${offsetBytes} of ${where} failed: ${describeNbdError(result.error)}`,
    });
  };
}
