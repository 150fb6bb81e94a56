import assert from "node:assert/strict";
import net from "node:net";

/**
 * Bytes of the buffer plaintext connections' sockets read into. A read takes up to this much from the
 * kernel at once (a 1 MiB WRITE can arrive in one read, not 16 of Node's 64 KiB), into the same memory
 * every time: Node's default gives every read a fresh 64 KiB allocation, which at 1 GiB/s of writes
 * is 16k allocations a second outside the JS heap, and a full garbage collection every few tens of ms.
 * Measured with fio 1 MiB writes at qd8 over a unix socket: about 1,000 IOPS with Node's reads, 2,500
 * with a 256 KiB buffer, 3,000 with 1 MiB, and no better with 4 MiB.
 */
export const READ_BUFFER_BYTES = 1024 * 1024;

/**
 * The one read buffer of this process, shared by every connection: libuv reads one socket at a time
 * on the event loop and hands each read to its callback before the next, and every reader copies what
 * it keeps before returning, so one buffer serves any number of connections (their memory does not
 * grow with their count).
 */
let shared: Buffer | null = null;
const sharedBuffer = (): Buffer => {
  shared ??= Buffer.allocUnsafeSlow(READ_BUFFER_BYTES);
  return shared;
};

/**
 * Bytes a read takes unless its reader asks for more: Node's own read size. A reader that stops
 * parsing mid-read must copy the rest, so this bounds what a throttled connection keeps; a reader in
 * the middle of a large payload asks for that payload's remaining bytes instead (`nextReadBytes`).
 */
export const SMALL_READ_BYTES = 64 * 1024;

/** Receives each read: a view of the connection's read buffer, valid only until the call returns. */
export type ReadSink = (chunk: Buffer) => void;

/**
 * An accepted plaintext socket that reads into the process's read buffer. Until a sink is set (the
 * handshake), each read is copied and emitted as a `data` event, as a plain socket's would be; once
 * set, the sink gets views of the buffer without a copy or an allocation, and must copy what it keeps
 * before it returns: the next read, on this connection or another, overwrites it.
 */
export class ReadBufferSocket {
  readonly socket: net.Socket;
  #sink: ReadSink | null = null;
  /** What the next read may take, and the view of the shared buffer of that length. */
  #nextBytes = SMALL_READ_BYTES;
  #view: Buffer = sharedBuffer().subarray(0, SMALL_READ_BYTES);
  /** Where the next read goes instead of the shared buffer (once), or null. */
  #into: Buffer | null = null;

  private constructor(socket: net.Socket) {
    this.socket = socket;
  }

  /**
   * Takes over the handle of `accepted`, which must come from a server created with `pauseOnConnect`
   * (it has read nothing yet). Node offers a read buffer (`onread`) only when a socket is created, and
   * a server creates its sockets without one, so the handle moves to a new socket that has it. The
   * accepted one closes with the new one, which keeps the server's count of open connections right.
   */
  static adopt(accepted: net.Socket): ReadBufferSocket {
    const holder = accepted as unknown as { _handle: object | null };
    const handle = holder._handle;
    assert.ok(handle, "an accepted socket has a handle");
    assert.ok(accepted.isPaused() || accepted.readableFlowing !== true, "the accepted socket must not read yet");
    let self: ReadBufferSocket | null = null;
    const socket = new net.Socket({
      handle,
      readable: true,
      writable: true,
      // The connection ends its side itself once it served what came before the client's end.
      allowHalfOpen: true,
      onread: {
        // Asked for before each read (after the previous one's callback): sized by the reader.
        buffer: () => (self === null ? sharedBuffer().subarray(0, SMALL_READ_BYTES) : (self.#into ?? self.#view)),
        callback: (bytes: number, buf: Uint8Array) => {
          (self as ReadBufferSocket).#deliver(Buffer.from(buf.buffer, buf.byteOffset, bytes));
        },
      },
    } as net.SocketConstructorOpts);
    self = new ReadBufferSocket(socket);
    holder._handle = null;
    socket.once("close", () => accepted.destroy());
    return self;
  }

  /**
   * The most the read after the next read callback may take (clamped to SMALL_READ_BYTES..READ_BUFFER_BYTES):
   * Node asks for the buffer only after each callback, so the reader sets it from within one, from what
   * it expects next, and what it must copy when it stops mid-read stays small.
   */
  set nextReadBytes(bytes: number) {
    const n = Math.min(READ_BUFFER_BYTES, Math.max(SMALL_READ_BYTES, bytes));
    if (n === this.#nextBytes) return;
    this.#nextBytes = n;
    this.#view = sharedBuffer().subarray(0, n);
  }

  /**
   * The next read (only that one) goes straight into `dest`, at most `dest.length` bytes, and the sink
   * gets a view of `dest`: the rest of a large payload lands in its own buffer without a copy through
   * the shared one. Set from within a read callback, as `nextReadBytes`; the caller keeps `dest` for
   * this connection until that read arrives or the socket is destroyed (no read comes after that).
   */
  readInto(dest: Buffer): void {
    assert.ok(dest.length > 0, "a read into an empty buffer");
    this.#into = dest;
  }

  /** From now on reads go to `sink` (views of the read buffer), or, with null, out as copies in `data` events. */
  deliverTo(sink: ReadSink | null): void {
    this.#sink = sink;
  }

  #deliver(view: Buffer): void {
    this.#into = null;
    if (this.#sink) this.#sink(view);
    else this.socket.emit("data", Buffer.from(view));
  }
}
