import { randomBytes } from "node:crypto";
import fs from "node:fs";
import net from "node:net";
import os from "node:os";
import path from "node:path";
import { afterEach, beforeEach, describe, expect, it } from "vitest";
import { ConformanceError } from "../errors.js";
import { canRun } from "../testing/env.js";
import { startNbdkit } from "../testing/nbdkit.js";
import { ByteQueue } from "./byte-queue.js";
import { MAX_IN_FLIGHT, type NbdClientConnection, openNbd } from "./client.js";
import { COMMAND, NBD_ERRNO, OPTION, TRANSMISSION_FLAG } from "./protocol.js";
import { formatNbdUri } from "./uri.js";

const HAS_NBDKIT = canRun({ tools: ["nbdkit"] }, "NBD client against nbdkit");
const MiB = 1024 * 1024;

let dir = "";
beforeEach(() => {
  dir = fs.mkdtempSync(path.join(os.tmpdir(), "keelson-nbd-"));
});
afterEach(() => {
  fs.rmSync(dir, { recursive: true, force: true });
});

/** Buffer equality without vitest's element-by-element deep compare (slow on megabytes); hex of the first difference on failure. */
function expectBytes(actual: Buffer | { error: unknown }, expected: Buffer): void {
  expect(Buffer.isBuffer(actual), `expected bytes, got ${JSON.stringify(actual)}`).toBe(true);
  const a = actual as Buffer;
  expect(a.length).toBe(expected.length);
  if (!a.equals(expected)) {
    let i = 0;
    while (a[i] === expected[i]) i++;
    expect.fail(`bytes differ from offset ${i}: ${a.toString("hex", i, i + 16)} vs ${expected.toString("hex", i, i + 16)}`);
  }
}

function unixUri(socketPath: string, exportName = ""): string {
  return formatNbdUri({ transport: "unix", socketPath, exportName });
}

// ---- A scripted server, for what nbdkit will not do on purpose ----

/** Exact reads from one accepted socket. */
class Peer {
  readonly queue = new ByteQueue();
  #wake: (() => void) | undefined;
  closed = false;
  constructor(readonly socket: net.Socket) {
    socket.on("data", (d: Buffer) => {
      this.queue.push(d);
      this.#wake?.();
    });
    socket.on("close", () => {
      this.closed = true;
      this.#wake?.();
    });
    socket.on("error", () => undefined);
  }
  async read(n: number): Promise<Buffer | undefined> {
    while (this.queue.length < n) {
      if (this.closed) return undefined;
      await new Promise<void>((r) => {
        this.#wake = r;
      });
    }
    return this.queue.take(n);
  }
  write(b: Buffer): void {
    this.socket.write(b);
  }
}

function optionReply(option: number, type: number, data: Buffer): Buffer {
  const h = Buffer.alloc(20);
  h.writeUInt32BE(0x0003e889, 0);
  h.writeUInt32BE(0x045565a9, 4);
  h.writeUInt32BE(option, 8);
  h.writeUInt32BE(type, 12);
  h.writeUInt32BE(data.length, 16);
  return Buffer.concat([h, data]);
}

const FLAGS = TRANSMISSION_FLAG.HAS_FLAGS | TRANSMISSION_FLAG.SEND_FLUSH | TRANSMISSION_FLAG.SEND_FUA;

/** Server side of greeting + GO (or ERR_UNSUP then EXPORT_NAME); resolves the export name asked for. */
async function serverHandshake(peer: Peer, options: { sizeBytes: number; goUnsupported?: boolean }): Promise<string> {
  const greeting = Buffer.alloc(18);
  greeting.write("NBDMAGICIHAVEOPT", 0, "latin1");
  greeting.writeUInt16BE(3, 16);
  peer.write(greeting);
  await peer.read(4);
  for (;;) {
    const h = await peer.read(16);
    if (!h) throw new Error("client went away");
    const option = h.readUInt32BE(8);
    const data = (await peer.read(h.readUInt32BE(12))) ?? Buffer.alloc(0);
    if (option === OPTION.EXPORT_NAME) {
      const reply = Buffer.alloc(10);
      reply.writeUInt32BE(0, 0);
      reply.writeUInt32BE(options.sizeBytes, 4);
      reply.writeUInt16BE(FLAGS, 8);
      peer.write(reply);
      return data.toString("utf8");
    }
    if (option === OPTION.GO && options.goUnsupported) {
      peer.write(optionReply(option, 2 ** 31 + 1, Buffer.alloc(0)));
      continue;
    }
    const info = Buffer.alloc(12);
    info.writeUInt16BE(0, 0);
    info.writeUInt32BE(0, 2);
    info.writeUInt32BE(options.sizeBytes, 6);
    info.writeUInt16BE(FLAGS, 10);
    peer.write(optionReply(option, 3, info));
    peer.write(optionReply(option, 1, Buffer.alloc(0)));
    return data.toString("utf8", 4, 4 + data.readUInt32BE(0));
  }
}

interface Request {
  type: number;
  handle: Buffer;
  offset: number;
  length: number;
}

async function readRequest(peer: Peer): Promise<Request | undefined> {
  const h = await peer.read(28);
  if (!h) return undefined;
  const req = { type: h.readUInt16BE(6), handle: h.subarray(8, 16), offset: h.readUInt32BE(20), length: h.readUInt32BE(24) };
  if (req.type === COMMAND.WRITE) await peer.read(req.length);
  return req;
}

function simpleReply(handle: Buffer, error = 0, data?: Buffer): Buffer {
  const h = Buffer.alloc(16);
  h.writeUInt32BE(0x67446698, 0);
  h.writeUInt32BE(error, 4);
  handle.copy(h, 8);
  return data ? Buffer.concat([h, data]) : h;
}

/** Runs `script` for each connection to a Unix socket; returns its URI and a closer. */
async function scriptedServer(script: (peer: Peer) => Promise<void>): Promise<{ uri: string; close: () => Promise<void> }> {
  const socketPath = path.join(dir, `fake-${Math.random().toString(36).slice(2)}.sock`);
  const sockets = new Set<net.Socket>();
  const server = net.createServer((socket) => {
    sockets.add(socket);
    socket.on("close", () => sockets.delete(socket));
    script(new Peer(socket)).catch(() => socket.destroy());
  });
  await new Promise<void>((r) => server.listen(socketPath, r));
  return {
    uri: unixUri(socketPath, "vol"),
    close: async () => {
      for (const s of sockets) s.destroy();
      await new Promise<void>((r) => server.close(() => r()));
    },
  };
}

/** Content a fake server returns for a read: every byte derived from the offset, so a mix-up shows. */
function fakeData(offset: number, length: number): Buffer {
  const b = Buffer.alloc(length);
  for (let i = 0; i < length; i++) b[i] = (offset / 512 + i * 7) & 0xff;
  return b;
}

describe("NBD client against a scripted server", () => {
  it("matches replies sent in reverse order to their requests", async () => {
    const count = 40;
    const server = await scriptedServer(async (peer) => {
      await serverHandshake(peer, { sizeBytes: 64 * MiB });
      const reqs: Request[] = [];
      while (reqs.length < count) {
        const r = await readRequest(peer);
        if (!r) return;
        reqs.push(r);
      }
      for (const r of reqs.reverse()) peer.write(simpleReply(r.handle, 0, fakeData(r.offset, r.length)));
      await readRequest(peer);
    });
    let conn: NbdClientConnection | undefined;
    try {
      conn = await openNbd(server.uri, { timeoutMs: 5_000 });
      expect(conn.sizeBytes).toBe(64 * MiB);
      const order: number[] = [];
      const reads = Array.from({ length: count }, (_, i) =>
        conn!.read(i * 4096, 512 + i).then((r) => {
          order.push(i);
          return r;
        }),
      );
      const results = await Promise.all(reads);
      results.forEach((r, i) => {
        expectBytes(r, fakeData(i * 4096, 512 + i));
      });
      expect(order).toEqual(Array.from({ length: count }, (_, i) => count - 1 - i));
    } finally {
      conn?.close();
      await server.close();
    }
  });

  it("falls back to NBD_OPT_EXPORT_NAME when NBD_OPT_GO is unsupported", async () => {
    let askedFor = "";
    const server = await scriptedServer(async (peer) => {
      askedFor = await serverHandshake(peer, { sizeBytes: 8 * MiB, goUnsupported: true });
      const r = await readRequest(peer);
      if (r) peer.write(simpleReply(r.handle, 0, fakeData(r.offset, r.length)));
      await readRequest(peer);
    });
    let conn: NbdClientConnection | undefined;
    try {
      conn = await openNbd(server.uri, { timeoutMs: 5_000 });
      expect(conn.sizeBytes).toBe(8 * MiB);
      expect(askedFor).toBe("vol");
      expectBytes(await conn.read(4096, 100), fakeData(4096, 100));
    } finally {
      conn?.close();
      await server.close();
    }
  });

  it("a reply with nonsense magic or an unknown handle settles every pending request as closed", async () => {
    for (const bad of ["magic", "handle"] as const) {
      const server = await scriptedServer(async (peer) => {
        await serverHandshake(peer, { sizeBytes: MiB });
        const r = await readRequest(peer);
        if (!r) return;
        const reply = simpleReply(bad === "handle" ? Buffer.from("ffffffffffffffff", "hex") : r.handle);
        if (bad === "magic") reply.writeUInt32BE(0xdeadbeef, 0);
        peer.write(reply);
        await readRequest(peer);
      });
      let conn: NbdClientConnection | undefined;
      try {
        conn = await openNbd(server.uri, { timeoutMs: 5_000 });
        const pending = [conn.write(0, Buffer.alloc(4096)), conn.flush(), conn.read(0, 4096)];
        expect(await Promise.all(pending)).toEqual(["closed", "closed", { error: "closed" }]);
        expect(conn.closed).toBe(true);
        expect(conn.closeReason).toMatch(/protocol violation/);
        expect(await conn.write(0, Buffer.alloc(512))).toBe("closed");
      } finally {
        conn?.close();
        await server.close();
      }
    }
  });

  it("an error reply to a read carries no data and the connection stays usable", async () => {
    const server = await scriptedServer(async (peer) => {
      await serverHandshake(peer, { sizeBytes: MiB });
      const first = await readRequest(peer);
      if (first) peer.write(simpleReply(first.handle, NBD_ERRNO.EIO));
      const second = await readRequest(peer);
      if (second) peer.write(simpleReply(second.handle, 0, fakeData(second.offset, second.length)));
      await readRequest(peer);
    });
    let conn: NbdClientConnection | undefined;
    try {
      conn = await openNbd(server.uri, { timeoutMs: 5_000 });
      expect(await conn.read(0, 4096)).toEqual({ error: NBD_ERRNO.EIO });
      expectBytes(await conn.read(512, 1024), fakeData(512, 1024));
    } finally {
      conn?.close();
      await server.close();
    }
  });

  it("a huge option reply length is refused before anything is allocated for it", async () => {
    const server = await scriptedServer(async (peer) => {
      const greeting = Buffer.alloc(18);
      greeting.write("NBDMAGICIHAVEOPT", 0, "latin1");
      greeting.writeUInt16BE(3, 16);
      peer.write(greeting);
      await peer.read(4);
      const h = await peer.read(16);
      if (!h) return;
      await peer.read(h.readUInt32BE(12));
      const header = optionReply(OPTION.GO, 3, Buffer.alloc(0));
      header.writeUInt32BE(0xffff_fff0, 16);
      peer.write(header);
      await peer.read(1);
    });
    try {
      const error = await openNbd(server.uri, { timeoutMs: 5_000 }).catch((e: unknown) => e);
      expect(error).toBeInstanceOf(ConformanceError);
      expect((error as ConformanceError).code).toBe("TARGET_FAILED");
      expect((error as Error).message).toMatch(/option reply of 4294967280 bytes/);
    } finally {
      await server.close();
    }
  });

  it("a server that never finishes the handshake times out with a ConformanceError", async () => {
    const server = await scriptedServer(async (peer) => {
      await peer.read(1);
    });
    try {
      const started = Date.now();
      const error = await openNbd(server.uri, { timeoutMs: 300 }).catch((e: unknown) => e);
      expect(error).toBeInstanceOf(ConformanceError);
      expect((error as Error).message).toMatch(/within 300 ms/);
      expect(Date.now() - started).toBeLessThan(3_000);
    } finally {
      await server.close();
    }
  });

  it("a missing socket is a TARGET_FAILED ConformanceError naming the URI", async () => {
    const uri = unixUri(path.join(dir, "nobody.sock"));
    const error = await openNbd(uri, { timeoutMs: 2_000 }).catch((e: unknown) => e);
    expect(error).toBeInstanceOf(ConformanceError);
    expect((error as ConformanceError).code).toBe("TARGET_FAILED");
    expect((error as Error).message).toContain(uri);
  });

  it("a request with no reply within requestTimeoutMs gives the connection up: pending settle as closed", async () => {
    const server = await scriptedServer(async (peer) => {
      await serverHandshake(peer, { sizeBytes: MiB });
      while (await readRequest(peer));
    });
    let conn: NbdClientConnection | undefined;
    try {
      conn = await openNbd(server.uri, { timeoutMs: 5_000, requestTimeoutMs: 200 });
      const started = Date.now();
      expect(await conn.write(0, Buffer.alloc(4096))).toBe("closed");
      expect(Date.now() - started).toBeLessThan(3_000);
      expect(conn.closeReason).toMatch(/no reply within 200 ms/);
    } finally {
      conn?.close();
      await server.close();
    }
  });
});

describe.skipIf(!HAS_NBDKIT)("NBD client against nbdkit", () => {
  it("writes then reads back the same bytes (1 MiB and unaligned pieces)", async () => {
    const nbdkit = await startNbdkit({ socketPath: path.join(dir, "nbdkit.sock"), plugin: ["memory", "64M"] });
    let conn: NbdClientConnection | undefined;
    try {
      conn = await openNbd(nbdkit.uri, { timeoutMs: 5_000 });
      expect(conn.sizeBytes).toBe(64 * MiB);
      const big = randomBytes(MiB);
      const small = randomBytes(777);
      expect(await conn.write(3 * MiB, big)).toBe(0);
      expect(await conn.write(10 * MiB + 13, small, { fua: true })).toBe(0);
      expectBytes(await conn.read(3 * MiB, MiB), big);
      expectBytes(await conn.read(10 * MiB + 13, 777), small);
      expectBytes(await conn.read(20 * MiB, 4096), Buffer.alloc(4096));
      expect(await conn.flush()).toBe(0);
      // Past the end is the server's EINVAL, not a hang or a throw.
      expect(await conn.read(64 * MiB, 4096)).toEqual({ error: NBD_ERRNO.EINVAL });
    } finally {
      conn?.close();
      await nbdkit.stop();
    }
  });

  it(`keeps more than MAX_IN_FLIGHT (${MAX_IN_FLIGHT}) requests going: later calls wait, all round-trip`, async () => {
    const nbdkit = await startNbdkit({ socketPath: path.join(dir, "nbdkit.sock"), plugin: ["memory", "64M"] });
    let conn: NbdClientConnection | undefined;
    try {
      conn = await openNbd(nbdkit.uri, { timeoutMs: 5_000 });
      const count = MAX_IN_FLIGHT * 4;
      const blocks = Array.from({ length: count }, () => randomBytes(4096));
      const writes = blocks.map((b, i) => conn!.write(i * 8192, b));
      writes.push(conn.flush());
      expect(new Set(await Promise.all(writes))).toEqual(new Set([0]));
      const reads = await Promise.all(blocks.map((_, i) => conn!.read(i * 8192, 4096)));
      reads.forEach((r, i) => {
        expectBytes(r, blocks[i] as Buffer);
      });
    } finally {
      conn?.close();
      await nbdkit.stop();
    }
  });

  it("nbdkit killed -9 mid-run: every pending request settles as closed, none hangs or rejects", async () => {
    const nbdkit = await startNbdkit({
      socketPath: path.join(dir, "nbdkit.sock"),
      filters: ["delay"],
      plugin: ["memory", "64M", "wdelay=10"],
    });
    let conn: NbdClientConnection | undefined;
    try {
      conn = await openNbd(nbdkit.uri, { timeoutMs: 5_000 });
      const pending = Array.from({ length: 50 }, (_, i) => conn!.write(i * 4096, randomBytes(4096)));
      pending.push(conn.flush());
      await new Promise((r) => setTimeout(r, 200));
      const started = Date.now();
      await nbdkit.stop("SIGKILL");
      const results = await Promise.all(pending);
      expect(new Set(results)).toEqual(new Set(["closed"]));
      expect(Date.now() - started).toBeLessThan(2_000);
      expect(conn.closed).toBe(true);
      expect(await conn.read(0, 4096)).toEqual({ error: "closed" });
    } finally {
      conn?.close();
      await nbdkit.stop("SIGKILL");
    }
  });

  it("close() sends NBD_CMD_DISC after outstanding replies and resolves whenClosed", async () => {
    // Writes take 300 ms: NBD_CMD_DISC sent at once would reach nbdkit while the write runs, and nbdkit
    // answers that write ESHUTDOWN (a CI run saw it without the delay too).
    const nbdkit = await startNbdkit({
      socketPath: path.join(dir, "nbdkit.sock"),
      filters: ["delay"],
      plugin: ["memory", "64M", "wdelay=300ms"],
    });
    try {
      const conn = await openNbd(nbdkit.uri, { timeoutMs: 5_000 });
      const data = randomBytes(4096);
      const write = conn.write(0, data);
      conn.close();
      expect(await write).toBe(0);
      await conn.whenClosed;
      const again = await openNbd(nbdkit.uri, { timeoutMs: 5_000 });
      try {
        expectBytes(await again.read(0, 4096), data);
      } finally {
        await again[Symbol.asyncDispose]();
      }
    } finally {
      await nbdkit.stop();
    }
  });
});
