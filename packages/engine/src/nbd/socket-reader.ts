import type { Socket } from "node:net";

/** Most bytes the handshake may have buffered unread; a client sending more is cut off. */
export const MAX_HANDSHAKE_BUFFER_BYTES = 1024 * 1024;

/** Thrown when the peer closed or misbehaved during the handshake. */
export class HandshakeAborted extends Error {}

/**
 * Reads exact byte counts from a socket during the handshake (not the hot
 * path). `detach()` hands back bytes already received past the handshake.
 */
export class SocketReader {
  readonly #socket: Socket;
  #chunks: Buffer[] = [];
  #buffered = 0;
  #want = 0;
  #resolve: ((b: Buffer) => void) | null = null;
  #reject: ((e: Error) => void) | null = null;
  #ended = false;
  readonly #onData = (chunk: Buffer): void => {
    this.#chunks.push(chunk);
    this.#buffered += chunk.length;
    if (this.#buffered > MAX_HANDSHAKE_BUFFER_BYTES) {
      this.#fail(new HandshakeAborted("client sent too much during the handshake"));
      return;
    }
    this.#pump();
  };
  readonly #onEnd = (): void => this.#fail(new HandshakeAborted("client closed the connection"));

  constructor(socket: Socket) {
    this.#socket = socket;
    socket.on("data", this.#onData);
    socket.on("end", this.#onEnd);
    socket.on("close", this.#onEnd);
  }

  /** Resolves with exactly `n` bytes. */
  read(n: number): Promise<Buffer> {
    if (this.#ended) return Promise.reject(new HandshakeAborted("connection ended"));
    return new Promise((resolve, reject) => {
      this.#want = n;
      this.#resolve = resolve;
      this.#reject = reject;
      this.#pump();
    });
  }

  /** Stops reading and returns bytes received beyond what was read. */
  detach(): Buffer {
    this.#socket.off("data", this.#onData);
    this.#socket.off("end", this.#onEnd);
    this.#socket.off("close", this.#onEnd);
    const rest = Buffer.concat(this.#chunks);
    this.#chunks = [];
    this.#buffered = 0;
    return rest;
  }

  #fail(error: Error): void {
    this.#ended = true;
    const reject = this.#reject;
    this.#resolve = null;
    this.#reject = null;
    reject?.(error);
  }

  #pump(): void {
    if (!this.#resolve || this.#buffered < this.#want) return;
    const all = this.#chunks.length === 1 ? (this.#chunks[0] as Buffer) : Buffer.concat(this.#chunks);
    const out = all.subarray(0, this.#want);
    const rest = all.subarray(this.#want);
    this.#chunks = rest.length > 0 ? [rest] : [];
    this.#buffered = rest.length;
    const resolve = this.#resolve;
    this.#resolve = null;
    this.#reject = null;
    resolve(out);
  }
}
