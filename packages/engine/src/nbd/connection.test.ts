import net from "node:net";
import { KeelsonError } from "@keelson/sdk";
import { afterEach, describe, expect, it, vi } from "vitest";
import { MAX_INFLIGHT_PER_CONNECTION } from "./connection.js";
import type { AdmissionWaiter, ExportCallback, ExportCatalog, NbdExport, RequestAdmission } from "./export.js";
import { IHAVEOPT, Option, REQUEST_MAGIC } from "./protocol.js";
import { RequestBuffers } from "./request-buffers.js";
import { NbdServer } from "./server.js";

const MIB = 1024 * 1024;
/** What a 1 MiB WRITE holds of the budget: the pooled buffer of its size class. */
const WRITE_MIB_CHARGE = RequestBuffers.bytesFor(MIB);
const SIZE_BYTES = 64 * MIB;

/** An in-memory export that can hold requests back, and counts what it holds. */
class HeldExport implements NbdExport {
  readonly name: string = "v";
  readonly description = "test export";
  readonly sizeBytes = SIZE_BYTES;
  readonly readOnly = false;
  readonly data = Buffer.alloc(SIZE_BYTES);
  /** While true, requests wait in `held` until `releaseAll`. */
  hold = false;
  readonly held: Array<() => void> = [];
  /** Bytes of requests started and not called back yet, and the most ever. */
  runningBytes = 0;
  maxRunningBytes = 0;

  #run(bytes: number, work: () => void, cb: ExportCallback): void {
    this.runningBytes += bytes;
    this.maxRunningBytes = Math.max(this.maxRunningBytes, this.runningBytes);
    const finish = (): void => {
      work();
      this.runningBytes -= bytes;
      cb(null);
    };
    if (this.hold) this.held.push(finish);
    else setImmediate(finish);
  }

  releaseAll(): void {
    for (const f of this.held.splice(0)) f();
  }

  read(offset: number, length: number, buf: Buffer, bufOffset: number, cb: ExportCallback): void {
    this.#run(length, () => this.data.copy(buf, bufOffset, offset, offset + length), cb);
  }

  write(offset: number, data: Buffer, _fua: boolean, cb: ExportCallback): void {
    this.#run(data.length, () => data.copy(this.data, offset), cb);
  }

  zero(offset: number, length: number, _options: { trim: boolean }, cb: ExportCallback): void {
    this.#run(0, () => this.data.fill(0, offset, offset + length), cb);
  }

  flush(cb: ExportCallback): void {
    this.#run(0, () => undefined, cb);
  }

  /** Handles released (one per connection that opened the export). */
  closes = 0;

  close(): void {
    this.closes++;
  }
}

/** A replica export: it keeps a frontend's write-intent log, which is what makes the server see it as one. */
class ReplicaExport extends HeldExport {
  override readonly name: string = "replica";
  saveActivity(_payload: Buffer, cb: ExportCallback): void {
    cb(null);
  }
}

function catalogOf(exp: HeldExport, replica: HeldExport = new ReplicaExport()): ExportCatalog {
  const open = (name: string): NbdExport | null => (name === exp.name ? exp : name === replica.name ? replica : null);
  return {
    list: () => [],
    open,
    describe: (name) => (open(name) ? { sizeBytes: SIZE_BYTES, readOnly: false, description: "" } : null),
  };
}

/** A raw NBD client with an exact-length reader over a chunk list. */
class Raw {
  readonly socket: net.Socket;
  readonly #chunks: Buffer[] = [];
  #buffered = 0;
  #wake: (() => void) | null = null;
  #closed = false;

  constructor(socket: net.Socket) {
    this.socket = socket;
    socket.on("data", (d: Buffer) => {
      this.#chunks.push(d);
      this.#buffered += d.length;
      this.#wake?.();
    });
    socket.on("close", () => {
      this.#closed = true;
      this.#wake?.();
    });
    socket.on("error", () => undefined);
  }

  static async open(address: string, exportName = "v"): Promise<Raw> {
    const at = address.lastIndexOf(":");
    const socket = net.connect(Number(address.slice(at + 1)), address.slice(0, at));
    await new Promise((resolve) => socket.once("connect", resolve));
    const raw = new Raw(socket);
    await raw.read(18);
    const name = Buffer.from(exportName);
    const opt = Buffer.alloc(4 + 16 + 4 + name.length + 2);
    opt.writeUInt32BE(3, 0);
    IHAVEOPT.copy(opt, 4);
    opt.writeUInt32BE(Option.GO, 12);
    opt.writeUInt32BE(4 + name.length + 2, 16);
    opt.writeUInt32BE(name.length, 20);
    name.copy(opt, 24);
    socket.write(opt);
    for (;;) {
      const h = await raw.read(20);
      await raw.read(h.readUInt32BE(16));
      if (h.readUInt32BE(12) === 1) return raw;
    }
  }

  async read(n: number): Promise<Buffer> {
    while (this.#buffered < n) {
      if (this.#closed) throw new Error("closed");
      await new Promise<void>((resolve) => {
        this.#wake = resolve;
      });
      this.#wake = null;
    }
    const all = Buffer.concat(this.#chunks);
    this.#chunks.length = 0;
    if (all.length > n) this.#chunks.push(all.subarray(n));
    this.#buffered -= n;
    return all.subarray(0, n);
  }

  /** Reads `count` simple replies of `dataBytes` each; their handles. */
  async replies(count: number, dataBytes: number): Promise<number[]> {
    const handles: number[] = [];
    for (let i = 0; i < count; i++) {
      const h = await this.read(16);
      expect(h.readUInt32BE(4)).toBe(0);
      handles.push(Number(h.readBigUInt64BE(8)));
      if (dataBytes > 0) await this.read(dataBytes);
    }
    return handles;
  }
}

function header(type: number, handle: number, offset: number, length: number): Buffer {
  const h = Buffer.alloc(28);
  h.writeUInt32BE(REQUEST_MAGIC, 0);
  h.writeUInt16BE(type, 6);
  h.writeBigUInt64BE(BigInt(handle), 8);
  h.writeBigUInt64BE(BigInt(offset), 16);
  h.writeUInt32BE(length, 24);
  return h;
}

function readBurst(count: number, length: number): Buffer {
  return Buffer.concat(Array.from({ length: count }, (_, i) => header(0, i + 1, (i * length) % (SIZE_BYTES - length), length)));
}

const waitUntil = async (what: () => boolean, ms = 5_000): Promise<void> => {
  const deadline = Date.now() + ms;
  while (!what() && Date.now() < deadline) await new Promise((r) => setTimeout(r, 5));
};

let server: NbdServer | null = null;
const raws: Raw[] = [];

async function serve(exp: HeldExport, bufferBytes: number): Promise<NbdServer> {
  server = new NbdServer(catalogOf(exp), { bufferBytes });
  await server.listen({ tcp: "127.0.0.1:0" });
  return server;
}

async function client(s: NbdServer, exportName = "v"): Promise<Raw> {
  const raw = await Raw.open(s.tcpAddress, exportName);
  raws.push(raw);
  return raw;
}

afterEach(async () => {
  for (const r of raws.splice(0)) r.socket.destroy();
  await server?.close();
  server = null;
});

describe("NBD connection back-pressure", () => {
  it("one chunk of 1,000 READ headers: the export never sees more than the in-flight limit, and every request is answered", async () => {
    const exp = new HeldExport();
    exp.hold = true;
    const s = await serve(exp, 256 * MIB);
    const raw = await client(s);
    raw.socket.write(readBurst(1000, 512));
    await waitUntil(() => exp.held.length >= MAX_INFLIGHT_PER_CONNECTION);
    await new Promise((r) => setTimeout(r, 100));
    expect(exp.held.length).toBe(MAX_INFLIGHT_PER_CONNECTION);
    const replies = raw.replies(1000, 512);
    while (exp.held.length > 0) {
      exp.releaseAll();
      await waitUntil(() => exp.held.length > 0, 1_000);
    }
    expect(new Set(await replies).size).toBe(1000);
    await waitUntil(() => s.bufferedBytes === 0);
    expect(s.bufferedBytes).toBe(0);
  });

  it("reads of 1 MiB from two clients with a 4 MiB budget: the export never holds more than the budget, all complete, the budget returns to 0", async () => {
    const exp = new HeldExport();
    const s = await serve(exp, 4 * MIB);
    const [a, b] = [await client(s), await client(s)];
    a.socket.write(readBurst(50, MIB));
    b.socket.write(readBurst(50, MIB));
    const done = await Promise.all([a.replies(50, MIB), b.replies(50, MIB)]);
    expect(done.map((h) => new Set(h).size)).toEqual([50, 50]);
    expect(exp.maxRunningBytes).toBeLessThanOrEqual(4 * MIB);
    await waitUntil(() => s.bufferedBytes === 0);
    expect(s.bufferedBytes).toBe(0);
  });

  it("pipelined WRITEs larger than a connection's share: each waits for budget, all land, the budget returns to 0", async () => {
    const exp = new HeldExport();
    const s = await serve(exp, 2 * MIB);
    const raw = await client(s);
    const parts: Buffer[] = [];
    for (let i = 0; i < 20; i++) parts.push(header(1, i + 1, i * 768 * 1024, 768 * 1024), Buffer.alloc(768 * 1024, i + 1));
    raw.socket.write(Buffer.concat(parts));
    expect(new Set(await raw.replies(20, 0)).size).toBe(20);
    for (let i = 0; i < 20; i++) expect(exp.data[i * 768 * 1024 + 1000]).toBe(i + 1);
    expect(exp.maxRunningBytes).toBeLessThanOrEqual(2 * MIB);
    await waitUntil(() => s.bufferedBytes === 0);
    expect(s.bufferedBytes).toBe(0);
  });

  it("a client that never reads its replies holds at most its share of the budget; another client's reads complete; all is released when it goes", async () => {
    const exp = new HeldExport();
    const s = await serve(exp, 8 * MIB);
    const hostile = await client(s);
    hostile.socket.pause();
    hostile.socket.write(readBurst(1000, MIB));
    await new Promise((r) => setTimeout(r, 300));
    // Its share is a quarter of the budget; one more request may be on its way when it reached it.
    expect(s.bufferedBytes).toBeLessThanOrEqual(2 * MIB + 2 * (MIB + 16));
    const good = await client(s);
    for (let round = 0; round < 5; round++) {
      good.socket.write(readBurst(4, MIB));
      expect((await good.replies(4, MIB)).length).toBe(4);
    }
    hostile.socket.destroy();
    await waitUntil(() => s.bufferedBytes === 0);
    expect(s.bufferedBytes).toBe(0);
  });

  it("a client gone mid-payload, and one gone while waiting for budget: their bytes go back, the next client is served", async () => {
    const exp = new HeldExport();
    const s = await serve(exp, MIB);
    const a = await client(s);
    a.socket.write(Buffer.concat([header(1, 1, 0, MIB), Buffer.alloc(MIB / 2, 1)]));
    await waitUntil(() => s.bufferedBytes === WRITE_MIB_CHARGE);
    expect(s.bufferedBytes).toBe(WRITE_MIB_CHARGE);
    const b = await client(s);
    b.socket.write(readBurst(1, MIB / 2));
    await new Promise((r) => setTimeout(r, 100));
    expect(s.bufferedBytes).toBe(WRITE_MIB_CHARGE);
    b.socket.destroy();
    a.socket.destroy();
    await waitUntil(() => s.bufferedBytes === 0);
    expect(s.bufferedBytes).toBe(0);
    const c = await client(s);
    c.socket.write(readBurst(2, MIB / 2));
    expect((await c.replies(2, MIB / 2)).length).toBe(2);
    expect(exp.data[0]).toBe(0);
  });

  it("servers have budgets of their own (the engine serves replicas on a server apart): with one server's budget used up, a write to another still lands", async () => {
    const exp = new HeldExport();
    const s = await serve(exp, MIB);
    const replicas = new NbdServer(catalogOf(new HeldExport()), { bufferBytes: MIB });
    await replicas.listen({ tcp: "127.0.0.1:0" });
    try {
      const app = await client(s);
      app.socket.write(Buffer.concat([header(1, 1, 0, MIB), Buffer.alloc(MIB / 2, 1)]));
      await waitUntil(() => s.bufferedBytes === WRITE_MIB_CHARGE);
      const peer = await client(replicas, "replica");
      peer.socket.write(Buffer.concat([header(1, 7, 0, MIB / 2), Buffer.alloc(MIB / 2, 9)]));
      expect(await peer.replies(1, 0)).toEqual([7]);
      app.socket.destroy();
      await waitUntil(() => s.bufferedBytes === 0);
      expect(s.bufferedBytes).toBe(0);
      expect(replicas.bufferedBytes).toBe(0);
    } finally {
      await replicas.close();
    }
  });
});

/** Records the memory each WRITE payload lies in, and fails the writes it is told to. */
class PayloadWatch extends HeldExport {
  readonly payloads: ArrayBufferLike[] = [];
  failNext = false;

  override write(offset: number, data: Buffer, fua: boolean, cb: ExportCallback): void {
    this.payloads.push(data.buffer);
    if (!this.failNext) return super.write(offset, data, fua, cb);
    this.failNext = false;
    setImmediate(() => cb(new KeelsonError({ code: "INTERNAL", message: "pool write failed: disk gone" })));
  }
}

describe("WRITE payload buffers", () => {
  /** One 256 KiB WRITE sent in two parts, so that its payload spans socket chunks; its reply's errno. */
  async function splitWrite(c: Raw, handle: number): Promise<number> {
    const half = Buffer.alloc(128 * 1024, handle);
    c.socket.write(Buffer.concat([header(1, handle, 0, 256 * 1024), half]));
    await new Promise((r) => setTimeout(r, 30));
    c.socket.write(half);
    return (await c.read(16)).readUInt32BE(4);
  }

  it("a payload spanning chunks lies in a pooled buffer that the next write reuses, unless the export failed it (it might still hold it)", async () => {
    const exp = new PayloadWatch();
    const s = await serve(exp, 64 * MIB);
    const c = await client(s);
    expect(await splitWrite(c, 1)).toBe(0);
    expect(await splitWrite(c, 2)).toBe(0);
    expect(exp.payloads[1]).toBe(exp.payloads[0]);
    exp.failNext = true;
    expect(await splitWrite(c, 3)).not.toBe(0);
    expect(exp.payloads[2]).toBe(exp.payloads[0]);
    expect(await splitWrite(c, 4)).toBe(0);
    expect(exp.payloads[3]).not.toBe(exp.payloads[2]);
    expect(exp.data.subarray(0, 256 * 1024).every((b) => b === 4)).toBe(true);
    await waitUntil(() => s.bufferedBytes === 0);
    expect(s.bufferedBytes).toBe(0);
  });

  it("the rest of a payload spanning reads is read straight into its pooled buffer: only what came with the header is copied", async () => {
    const exp = new PayloadWatch();
    const s = await serve(exp, 64 * MIB);
    const c = await client(s);
    const copied: Array<{ into: ArrayBufferLike; bytes: number }> = [];
    const copy = Buffer.prototype.copy;
    const spy = vi.spyOn(Buffer.prototype, "copy").mockImplementation(function (this: Buffer, ...args: unknown[]) {
      const [target, ...rest] = args as [Uint8Array, number?, number?, number?];
      const bytes = copy.call(this, target, ...rest);
      copied.push({ into: target.buffer, bytes });
      return bytes;
    });
    try {
      expect(await splitWrite(c, 7)).toBe(0);
    } finally {
      spy.mockRestore();
    }
    const intoPayload = copied.filter((x) => x.into === exp.payloads[0]).reduce((n, x) => n + x.bytes, 0);
    // The first read takes the header and up to SMALL_READ_BYTES of payload; the 192 KiB after it are not copied.
    expect(intoPayload).toBeGreaterThan(0);
    expect(intoPayload).toBeLessThanOrEqual(64 * 1024);
    expect(exp.data.subarray(0, 256 * 1024).every((b) => b === 7)).toBe(true);
  });

  it("a payload that arrives whole in one read is copied out of the connection's read buffer into a pooled one, which the next write reuses", async () => {
    const exp = new PayloadWatch();
    const s = await serve(exp, 64 * MIB);
    const c = await client(s);
    for (const handle of [1, 2]) {
      c.socket.write(Buffer.concat([header(1, handle, 0, 4096), Buffer.alloc(4096, handle)]));
      expect(await c.replies(1, 0)).toEqual([handle]);
    }
    // A pooled buffer of the 4 KiB class, not the connection's read buffer (a view of it would also be "the same memory").
    expect(exp.payloads[0]?.byteLength).toBe(RequestBuffers.bytesFor(4096));
    expect(exp.payloads[1], "the pooled buffer of the first write, given back").toBe(exp.payloads[0]);
    expect(exp.data.subarray(0, 4096).every((b) => b === 2)).toBe(true);
  });

  it("payloads held by the export keep their bytes while later reads, of this connection and another, overwrite the read buffer", async () => {
    const exp = new HeldExport();
    exp.hold = true;
    const s = await serve(exp, 64 * MIB);
    const clients = [await client(s), await client(s)];
    const count = Math.min(48, MAX_INFLIGHT_PER_CONNECTION);
    const each = 64 * 1024;
    // Each client's writes in one socket write, both at once: more than one read takes, so the
    // process's read buffer is filled over and over, by both connections in turn.
    clients.forEach((c, k) => {
      const at = (i: number) => (k * count + i) * each;
      c.socket.write(
        Buffer.concat(
          Array.from({ length: count }, (_, i) => [header(1, i, at(i), each), Buffer.alloc(each, k * count + i + 1)]).flat(),
        ),
      );
    });
    await waitUntil(() => exp.held.length === 2 * count);
    exp.releaseAll();
    for (const c of clients) {
      expect((await c.replies(count, 0)).sort((a, b) => a - b)).toEqual(Array.from({ length: count }, (_, i) => i));
    }
    for (let i = 0; i < 2 * count; i++) {
      expect(
        exp.data.subarray(i * each, (i + 1) * each).every((b) => b === i + 1),
        `write ${i}`,
      ).toBe(true);
    }
    await waitUntil(() => s.bufferedBytes === 0);
  });
});

describe("disconnect", () => {
  it("NBD_CMD_DISC: the server ends its side, sees the client's end although it stopped reading, closes, and the server shuts down", async () => {
    const exp = new HeldExport();
    const s = new NbdServer(catalogOf(exp), { bufferBytes: 64 * MIB });
    await s.listen({ tcp: "127.0.0.1:0" });
    const c = await client(s);
    const ended = new Promise((resolve) => c.socket.once("end", resolve));
    c.socket.write(header(2, 1, 0, 0));
    await ended;
    c.socket.end();
    // Before: a socket reading into the shared buffer stopped reading once paused for the disconnect,
    // never saw the client's FIN, and stayed open, so this close never finished.
    await s.close();
    expect(exp.closes).toBe(1);
  });
});

describe("a client that ends its side", () => {
  it("after NBD_CMD_DISC with requests queued behind the in-flight limit, then a half-close (as libnbd does): every request is answered, then the server closes", async () => {
    const exp = new HeldExport();
    exp.hold = true;
    const s = await serve(exp, 64 * MIB);
    const c = await client(s);
    const sent = MAX_INFLIGHT_PER_CONNECTION + 8;
    const writes = Array.from({ length: sent }, (_, i) => [header(1, i, i * 4096, 4096), Buffer.alloc(4096, (i % 250) + 1)]);
    const ended = new Promise((resolve) => c.socket.once("end", resolve));
    c.socket.end(Buffer.concat([...writes.flat(), header(2, sent, 0, 0)]));
    await waitUntil(() => exp.held.length >= MAX_INFLIGHT_PER_CONNECTION - 1);
    await new Promise((r) => setTimeout(r, 100));
    exp.hold = false;
    exp.releaseAll();
    expect((await c.replies(sent, 0)).sort((a, b) => a - b)).toEqual(Array.from({ length: sent }, (_, i) => i));
    await ended;
    for (let i = 0; i < sent; i++) expect(exp.data[i * 4096], `write ${i}`).toBe((i % 250) + 1);
    await s.close();
  });
});

describe("a connection to an export whose earlier connection is closing", () => {
  /** A connection whose write the export holds, and whose client then gave up on it and hung up. */
  async function closingWithAWriteHeld(): Promise<{ exp: HeldExport; s: NbdServer }> {
    const exp = new HeldExport();
    exp.hold = true;
    const s = await serve(exp, 64 * MIB);
    const old = await client(s);
    old.socket.write(Buffer.concat([header(1, 1, 0, 4096), Buffer.alloc(4096, 0x11)]));
    await waitUntil(() => exp.held.length === 1);
    old.socket.destroy();
    return { exp, s };
  }

  it("starts only once the closing connection's writes ended: a write it acknowledges is never overwritten by one its client gave up on", async () => {
    // Its client gave up on the write (a frontend that timed the replica out) and opens the export again.
    const { exp, s } = await closingWithAWriteHeld();
    const fresh = await client(s);
    fresh.socket.write(Buffer.concat([header(1, 2, 0, 4096), Buffer.alloc(4096, 0x22)]));
    await new Promise((r) => setTimeout(r, 100));
    expect(exp.held.length, "the new connection's write waits for the old one's").toBe(1);
    exp.hold = false;
    exp.releaseAll();
    expect(await fresh.replies(1, 0)).toEqual([2]);
    expect(exp.data[0], "the acknowledged write is the one the volume holds").toBe(0x22);
  });

  it("a connection paused at its in-flight limit still sees its client hang up: the new connection's write waits for its writes", async () => {
    const exp = new HeldExport();
    exp.hold = true;
    const s = await serve(exp, 64 * MIB);
    const old = await client(s);
    // More than it may run at once: it stops reading with the rest waiting.
    const sent = MAX_INFLIGHT_PER_CONNECTION + 8;
    old.socket.write(
      Buffer.concat(Array.from({ length: sent }, (_, i) => [header(1, i, 0, 4096), Buffer.alloc(4096, 0x11)]).flat()),
    );
    // The last one it started may wait for the rest of its payload: at least all but one are held.
    await waitUntil(() => exp.held.length >= MAX_INFLIGHT_PER_CONNECTION - 1);
    await new Promise((r) => setTimeout(r, 50));
    const oldHeld = exp.held.length;
    old.socket.destroy();
    const fresh = await client(s);
    fresh.socket.write(Buffer.concat([header(1, 9999, 0, 4096), Buffer.alloc(4096, 0x22)]));
    await new Promise((r) => setTimeout(r, 100));
    expect(exp.held.length, "the new connection's write waits for the old one's").toBe(oldHeld);
    exp.hold = false;
    exp.releaseAll();
    expect(await fresh.replies(1, 0)).toEqual([9999]);
    expect(exp.data[0], "the acknowledged write is the one the volume holds").toBe(0x22);
  });

  it("is refused when the closing connection's requests do not end within the handshake time, and its export handle goes", async () => {
    const { exp, s } = await closingWithAWriteHeld();
    const fresh = await client(s);
    await waitUntil(() => fresh.socket.destroyed || fresh.socket.readableEnded, 15_000);
    expect(fresh.socket.destroyed || fresh.socket.readableEnded).toBe(true);
    expect(exp.held.length).toBe(1);
    expect(exp.closes, "the refused connection's handle went; the closing one's waits for its write").toBe(1);
    exp.releaseAll();
    await waitUntil(() => exp.closes === 2);
    expect(exp.closes).toBe(2);
  }, 30_000);
});

/** A front that lets `open` requests start, then makes each wait until `grant`. */
class TestAdmission implements RequestAdmission {
  open: number;
  readonly waiting: AdmissionWaiter[] = [];
  cancelled = 0;

  constructor(open: number) {
    this.open = open;
  }

  enter(waiter: AdmissionWaiter): boolean {
    if (this.open > 0) {
      this.open--;
      return true;
    }
    expect(this.waiting).not.toContain(waiter); // a connection waits for one request at a time
    this.waiting.push(waiter);
    return false;
  }

  cancel(waiter: AdmissionWaiter): boolean {
    const at = this.waiting.indexOf(waiter);
    if (at < 0) return false;
    this.waiting.splice(at, 1);
    this.cancelled++;
    return true;
  }

  /** Lets `n` more start: the waiting first. */
  grant(n: number): void {
    this.open += n;
    while (this.open > 0 && this.waiting.length > 0) {
      this.open--;
      this.waiting.shift()?.onAdmitted();
    }
  }
}

class AdmittedExport extends HeldExport {
  readonly admission: TestAdmission;
  /** Requests the export was handed. */
  started = 0;

  constructor(admission: TestAdmission) {
    super();
    this.admission = admission;
  }

  override read(offset: number, length: number, buf: Buffer, bufOffset: number, cb: ExportCallback): void {
    this.started++;
    super.read(offset, length, buf, bufOffset, cb);
  }

  override write(offset: number, data: Buffer, fua: boolean, cb: ExportCallback): void {
    this.started++;
    super.write(offset, data, fua, cb);
  }
}

/** A server whose one export lets `open` requests start before each must be granted; a client connected. */
async function admittedSetup(open: number) {
  const admission = new TestAdmission(open);
  const exp = new AdmittedExport(admission);
  const s = await serve(exp, 256 * MIB);
  return { admission, exp, s, raw: await client(s) };
}

describe("NBD connection front admission (issue 16)", () => {
  it("parses no further than the front allows: a burst of READs starts 3, then one per turn granted, and every one is answered", async () => {
    const { admission, exp, raw } = await admittedSetup(3);
    const replies = raw.replies(10, 4096);
    raw.socket.write(readBurst(10, 4096));
    await waitUntil(() => admission.waiting.length === 1);
    await new Promise((r) => setTimeout(r, 50));
    expect(exp.started).toBe(3);
    admission.grant(2);
    await waitUntil(() => exp.started === 5);
    await new Promise((r) => setTimeout(r, 50));
    expect(exp.started).toBe(5);
    admission.grant(100);
    expect(new Set(await replies).size).toBe(10);
    expect(exp.started).toBe(10);
  });

  it("WRITEs whose payloads wait behind the front land intact once their turn comes", async () => {
    const { admission, exp, raw } = await admittedSetup(1);
    const parts: Buffer[] = [];
    for (let i = 0; i < 8; i++) parts.push(header(1, i + 1, i * 65536, 65536), Buffer.alloc(65536, i + 1));
    raw.socket.write(Buffer.concat(parts));
    await waitUntil(() => admission.waiting.length === 1);
    for (let i = 0; i < 7; i++) {
      await waitUntil(() => admission.waiting.length === 1);
      admission.grant(1);
    }
    expect(new Set(await raw.replies(8, 0)).size).toBe(8);
    for (let i = 0; i < 8; i++) expect([exp.data[i * 65536], exp.data[i * 65536 + 65535]]).toEqual([i + 1, i + 1]);
  });

  it("a client that hangs up while its requests wait for their turn still has them served once the front lets them (as after DISC), then its handle goes", async () => {
    const { admission, exp, s, raw } = await admittedSetup(1);
    raw.socket.write(readBurst(5, 4096));
    await waitUntil(() => admission.waiting.length === 1);
    raw.socket.end();
    await new Promise((r) => setTimeout(r, 50));
    expect(exp.closes).toBe(0);
    admission.grant(100);
    await waitUntil(() => exp.closes === 1);
    expect([exp.started, exp.closes, admission.cancelled]).toEqual([5, 1, 0]);
    await waitUntil(() => s.bufferedBytes === 0);
    expect(s.bufferedBytes).toBe(0);
  });

  it("a connection cut while waiting for its turn (server shutdown) is withdrawn from the front and its handle released", async () => {
    const { admission, exp, s, raw } = await admittedSetup(1);
    raw.socket.write(readBurst(5, 4096));
    await waitUntil(() => admission.waiting.length === 1);
    await s.close();
    server = null;
    await waitUntil(() => exp.closes === 1);
    expect([exp.started, exp.closes, admission.cancelled]).toEqual([1, 1, 1]);
    expect(admission.waiting).toHaveLength(0);
  });
});
