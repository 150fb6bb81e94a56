import net from "node:net";

// A minimal NBD client for tests: it lets a test see exactly which writes and
// flushes were acknowledged, and send malformed bytes on purpose. Real clients
// (nbdcopy, fio, qemu-img, nbdinfo) are used everywhere else.

const IHAVEOPT = Buffer.from("IHAVEOPT");
const REQUEST_MAGIC = 0x25609513;

/** A raw connection with an exact-length reader. */
export class RawConnection {
  readonly socket: net.Socket;
  #buf = Buffer.alloc(0);
  #waiter: (() => void) | null = null;
  #closed = false;

  private constructor(socket: net.Socket) {
    this.socket = socket;
    socket.on("data", (d: Buffer) => {
      this.#buf = Buffer.concat([this.#buf, d]);
      this.#waiter?.();
    });
    socket.on("close", () => {
      this.#closed = true;
      this.#waiter?.();
    });
    socket.on("error", () => undefined);
  }

  /** `address` is HOST:PORT, or the path of a unix socket. */
  static connect(address: string): Promise<RawConnection> {
    const at = address.lastIndexOf(":");
    return new Promise((resolve, reject) => {
      const onConnect = () => resolve(new RawConnection(s));
      const s = address.startsWith("/")
        ? net.connect(address, onConnect)
        : net.connect(Number(address.slice(at + 1)), address.slice(0, at), onConnect);
      s.once("error", reject);
    });
  }

  get closed(): boolean {
    return this.#closed;
  }

  /** Resolves with `n` bytes, or null when the server closed first (or `timeoutMs` passed). */
  async read(n: number, timeoutMs = 5_000): Promise<Buffer | null> {
    const deadline = Date.now() + timeoutMs;
    while (this.#buf.length < n) {
      if (this.#closed || Date.now() > deadline) return null;
      await new Promise<void>((resolve) => {
        this.#waiter = resolve;
        setTimeout(resolve, 50);
      });
      this.#waiter = null;
    }
    const out = this.#buf.subarray(0, n);
    this.#buf = this.#buf.subarray(n);
    return out;
  }

  /** Resolves true once the server has closed the connection (within `timeoutMs`). */
  async waitClosed(timeoutMs = 5_000): Promise<boolean> {
    const deadline = Date.now() + timeoutMs;
    while (!this.#closed && Date.now() < deadline) await new Promise((r) => setTimeout(r, 20));
    return this.#closed;
  }

  write(b: Buffer): void {
    this.socket.write(b);
  }

  close(): void {
    this.socket.destroy();
  }

  /** Reads the server greeting and sends client flags (fixed newstyle, no zeroes). */
  async greet(): Promise<void> {
    const g = await this.read(18);
    if (g?.toString("ascii", 0, 8) !== "NBDMAGIC") throw new Error("no NBD greeting");
    const flags = Buffer.alloc(4);
    flags.writeUInt32BE(3);
    this.write(flags);
  }

  sendOption(option: number, data: Buffer = Buffer.alloc(0)): void {
    const h = Buffer.alloc(16);
    IHAVEOPT.copy(h, 0);
    h.writeUInt32BE(option, 8);
    h.writeUInt32BE(data.length, 12);
    this.write(Buffer.concat([h, data]));
  }

  /** Reads one option reply. */
  async optionReply(): Promise<{ option: number; type: number; data: Buffer } | null> {
    const h = await this.read(20);
    if (!h) return null;
    const data = await this.read(h.readUInt32BE(16));
    return { option: h.readUInt32BE(8), type: h.readUInt32BE(12), data: data ?? Buffer.alloc(0) };
  }

  /** OPT_GO for `name`; resolves with the export size, or throws with the error reply type. */
  async go(name: string): Promise<number> {
    const n = Buffer.from(name);
    const d = Buffer.alloc(4 + n.length + 2);
    d.writeUInt32BE(n.length, 0);
    n.copy(d, 4);
    this.sendOption(7, d);
    let size = -1;
    for (;;) {
      const r = await this.optionReply();
      if (!r) throw new Error("closed during OPT_GO");
      if (r.type === 3 && r.data.readUInt16BE(0) === 0) size = Number(r.data.readBigUInt64BE(2));
      else if (r.type === 1) return size;
      else if (r.type >= 2 ** 31) throw new Error(`OPT_GO error 0x${r.type.toString(16)}`);
    }
  }

  /** Encodes a request header. */
  static header(type: number, flags: number, handle: number, offset: number, length: number): Buffer {
    const h = Buffer.alloc(28);
    h.writeUInt32BE(REQUEST_MAGIC, 0);
    h.writeUInt16BE(flags, 4);
    h.writeUInt16BE(type, 6);
    h.writeBigUInt64BE(BigInt(handle), 8);
    h.writeBigUInt64BE(BigInt(offset), 16);
    h.writeUInt32BE(length, 24);
    return h;
  }

  /** Reads one structured reply chunk (NBD_OPT_STRUCTURED_REPLY negotiated): its header fields and payload. */
  async chunk(): Promise<{ magic: number; flags: number; type: number; handle: number; payload: Buffer } | null> {
    const h = await this.read(20);
    if (!h) return null;
    const payload = await this.read(h.readUInt32BE(16));
    return {
      magic: h.readUInt32BE(0),
      flags: h.readUInt16BE(4),
      type: h.readUInt16BE(6),
      handle: Number(h.readBigUInt64BE(8)),
      payload: payload ?? Buffer.alloc(0),
    };
  }

  /** Reads one simple reply header (and `dataLength` bytes of data on success). */
  async reply(dataLength = 0): Promise<{ error: number; handle: number; data: Buffer } | null> {
    const h = await this.read(16);
    if (!h) return null;
    const error = h.readUInt32BE(4);
    const data = error === 0 && dataLength > 0 ? await this.read(dataLength) : Buffer.alloc(0);
    return { error, handle: Number(h.readBigUInt64BE(8)), data: data ?? Buffer.alloc(0) };
  }
}

/** An NBD client with many requests in flight, matched to replies by handle. */
export class NbdTestClient {
  readonly raw: RawConnection;
  #next = 1;
  readonly #waiting = new Map<number, { length: number; resolve: (r: { error: number; data: Buffer }) => void }>();
  #pumping = false;
  sizeBytes = 0;

  private constructor(raw: RawConnection) {
    this.raw = raw;
  }

  static async open(address: string, name: string): Promise<NbdTestClient> {
    const raw = await RawConnection.connect(address);
    await raw.greet();
    const c = new NbdTestClient(raw);
    c.sizeBytes = await raw.go(name);
    return c;
  }

  #request(type: number, flags: number, offset: number, length: number, payload?: Buffer, replyLength = 0) {
    const handle = this.#next++;
    const done = new Promise<{ error: number; data: Buffer }>((resolve) => {
      this.#waiting.set(handle, { length: replyLength, resolve });
    });
    const h = RawConnection.header(type, flags, handle, offset, length);
    this.raw.write(payload ? Buffer.concat([h, payload]) : h);
    this.#pump();
    return done;
  }

  async #pump(): Promise<void> {
    if (this.#pumping) return;
    this.#pumping = true;
    while (this.#waiting.size > 0) {
      const h = await this.raw.read(16, 60_000);
      if (!h) {
        this.#lost();
        break;
      }
      const handle = Number(h.readBigUInt64BE(8));
      const error = h.readUInt32BE(4);
      const w = this.#waiting.get(handle);
      if (!w) throw new Error(`reply for unknown handle ${handle}`);
      const data = error === 0 && w.length > 0 ? await this.raw.read(w.length, 60_000) : Buffer.alloc(0);
      if (!data) {
        // The server went away in the middle of this reply's data (killed): it and the rest fail, and the
        // bytes of the cut reply are not parsed as the next header.
        this.#lost();
        break;
      }
      this.#waiting.delete(handle);
      w.resolve({ error, data });
    }
    this.#pumping = false;
  }

  /** The connection is gone: every request still waiting fails (error -1), as the server never answered it whole. */
  #lost(): void {
    for (const w of this.#waiting.values()) w.resolve({ error: -1, data: Buffer.alloc(0) });
    this.#waiting.clear();
  }

  read(offset: number, length: number) {
    return this.#request(0, 0, offset, length, undefined, length);
  }
  write(offset: number, data: Buffer, fua = false) {
    return this.#request(1, fua ? 1 : 0, offset, data.length, data);
  }
  flush() {
    return this.#request(3, 0, 0, 0);
  }
  trim(offset: number, length: number) {
    return this.#request(4, 0, offset, length);
  }
  writeZeroes(offset: number, length: number, flags = 0) {
    return this.#request(6, flags, offset, length);
  }
  /** Sends any request (tests of bad commands and flags). */
  custom(type: number, flags: number, offset: number, length: number, payload?: Buffer) {
    return this.#request(type, flags, offset, length, payload);
  }
  /** NBD_CMD_DISC, then wait for the server to close. */
  async disconnect(): Promise<void> {
    this.raw.write(RawConnection.header(2, 0, 0, 0, 0));
    await this.raw.waitClosed();
    this.raw.close();
  }
  close(): void {
    this.raw.close();
  }
}
