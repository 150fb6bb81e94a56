// Opening the socket and running the handshake under one deadline. What
// comes back is a socket in transmission phase and any bytes the server sent
// past the handshake.

import net from "node:net";
import { ConformanceError } from "../errors.js";
import { ByteQueue } from "./byte-queue.js";
import { type HandshakeIo, type NegotiatedExport, negotiate } from "./handshake.js";
import type { NbdAddress } from "./uri.js";

/** Most bytes the server may have sent ahead of what the handshake has read; more is a misbehaving server. */
export const MAX_HANDSHAKE_BUFFER_BYTES = 1024 * 1024;

/** Exact-length reads over a socket during the handshake (not the hot path). */
class HandshakeSocket implements HandshakeIo {
  readonly queue = new ByteQueue();
  /** The one read in progress: the handshake is strictly request/response. */
  #waiter: { lengthBytes: number; resolve: (b: Buffer) => void; reject: (e: Error) => void } | undefined;
  /** Why reads now fail (closed, timed out, too much data); set once. */
  #failure: Error | undefined;
  readonly #socket: net.Socket;
  readonly #where: string;

  constructor(socket: net.Socket, where: string) {
    this.#socket = socket;
    this.#where = where;
    socket.on("data", this.#onData);
    socket.on("error", this.#onError);
    socket.on("close", this.#onClose);
  }

  readonly #onError = (error: Error): void => {
    this.fail(
      new ConformanceError({ code: "TARGET_FAILED", message: `connecting to ${this.#where}: ${error.message}`, cause: error }),
    );
  };

  readonly #onData = (chunk: Buffer): void => {
    this.queue.push(chunk);
    if (this.queue.length > MAX_HANDSHAKE_BUFFER_BYTES) {
      this.fail(
        new ConformanceError({
          code: "TARGET_FAILED",
          message: `NBD server at ${this.#where} sent more than ${MAX_HANDSHAKE_BUFFER_BYTES} bytes unasked during the handshake`,
        }),
      );
      this.#socket.destroy();
      return;
    }
    this.#pump();
  };

  readonly #onClose = (): void => {
    this.fail(
      new ConformanceError({
        code: "TARGET_FAILED",
        message: `NBD server at ${this.#where} closed the connection during the handshake`,
      }),
    );
  };

  read(lengthBytes: number): Promise<Buffer> {
    if (this.#failure !== undefined) return Promise.reject(this.#failure);
    return new Promise((resolve, reject) => {
      this.#waiter = { lengthBytes, resolve, reject };
      this.#pump();
    });
  }

  write(data: Buffer): void {
    this.#socket.write(data);
  }

  /** Makes the pending and every later read reject with `error` (the first failure wins). */
  fail(error: Error): void {
    this.#failure ??= error;
    const waiter = this.#waiter;
    this.#waiter = undefined;
    waiter?.reject(this.#failure);
  }

  /** Stops listening; the caller takes over the socket and `queue`. */
  detach(): void {
    this.#socket.off("data", this.#onData);
    this.#socket.off("error", this.#onError);
    this.#socket.off("close", this.#onClose);
  }

  #pump(): void {
    const waiter = this.#waiter;
    if (waiter === undefined || this.queue.length < waiter.lengthBytes) return;
    this.#waiter = undefined;
    waiter.resolve(this.queue.take(waiter.lengthBytes));
  }
}

function connectSocket(address: NbdAddress): net.Socket {
  if (address.transport === "unix") return net.connect({ path: address.socketPath });
  const socket = net.connect({ host: address.host, port: address.port });
  // Requests are small and latency-bound; Nagle would hold them back.
  socket.setNoDelay(true);
  return socket;
}

/** A socket in transmission phase plus bytes already received past the handshake. */
export interface NegotiatedSocket {
  socket: net.Socket;
  pending: ByteQueue;
  negotiated: NegotiatedExport;
}

/**
 * Connects and negotiates `address.exportName`, all within `timeoutMs`.
 * Rejects with ConformanceError (TARGET_FAILED on refusal, closure, protocol
 * violations and the deadline; NOT_SUPPORTED for oldstyle servers) and
 * leaves no socket behind when it does.
 */
export async function connectAndNegotiate(address: NbdAddress, where: string, timeoutMs: number): Promise<NegotiatedSocket> {
  const socket = connectSocket(address);
  // Errors are reported through the handshake's reads (and later through the
  // client's "closed" replies); this listener only keeps one from being unhandled.
  socket.on("error", () => undefined);
  const io = new HandshakeSocket(socket, where);
  const timer = setTimeout(() => {
    io.fail(
      new ConformanceError({
        code: "TARGET_FAILED",
        message: `connecting to ${where}: no completed NBD handshake within ${timeoutMs} ms`,
      }),
    );
    socket.destroy();
  }, timeoutMs);
  try {
    const negotiated = await negotiate(io, where, address.exportName);
    io.detach();
    return { socket, pending: io.queue, negotiated };
  } catch (error) {
    io.detach();
    socket.destroy();
    throw error;
  } finally {
    clearTimeout(timer);
  }
}
