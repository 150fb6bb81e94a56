import net from "node:net";
import { type ErrorCode, isKeelsonError, KeelsonError } from "@keelson/sdk";
import { afterEach, describe, expect, it } from "vitest";
import type { ExportCallback, ExportCatalog, NbdExport } from "../nbd/export.js";
import { IHAVEOPT, NBDMAGIC, OPTION_REPLY_MAGIC, Option, OptionReply, SIMPLE_REPLY_MAGIC } from "../nbd/protocol.js";
import { NbdServer } from "../nbd/server.js";
import { MAX_REPLICA_INFLIGHT, MAX_REPLICA_QUEUED, ReplicaClient } from "./replica-client.js";

const SIZE_BYTES = 1024 * 1024;

/** An in-memory export; `failWith` makes every request fail with that keelson error. */
class MemoryExport implements NbdExport {
  readonly name: string;
  readonly description = "test export";
  readonly sizeBytes = SIZE_BYTES;
  readonly readOnly: boolean;
  readonly #data = Buffer.alloc(SIZE_BYTES);
  readonly #failWith: KeelsonError | null;

  constructor(name: string, readOnly: boolean, failWith: KeelsonError | null) {
    this.name = name;
    this.readOnly = readOnly;
    this.#failWith = failWith;
  }

  read(offset: number, length: number, buf: Buffer, bufOffset: number, cb: ExportCallback): void {
    if (this.#failWith) return cb(this.#failWith);
    this.#data.copy(buf, bufOffset, offset, offset + length);
    cb(null);
  }

  write(offset: number, data: Buffer, _fua: boolean, cb: ExportCallback): void {
    if (this.#failWith) return cb(this.#failWith);
    data.copy(this.#data, offset);
    cb(null);
  }

  zero(offset: number, length: number, _options: { trim: boolean }, cb: ExportCallback): void {
    if (this.#failWith) return cb(this.#failWith);
    this.#data.fill(0, offset, offset + length);
    cb(null);
  }

  flush(cb: ExportCallback): void {
    cb(this.#failWith);
  }

  close(): void {}
}

/** Exports: `plain` (writable), `snap` (read-only), and `fail-CODE` (every request fails with CODE). */
function catalog(): ExportCatalog {
  const plain = new MemoryExport("plain", false, null);
  const open = (name: string): NbdExport | null => {
    if (name === "plain") return plain;
    if (name === "snap") return new MemoryExport(name, true, null);
    if (name.startsWith("fail-")) {
      const code = name.slice(5) as ErrorCode;
      return new MemoryExport(name, false, new KeelsonError({ code, message: `volume v1 says ${code.toLowerCase()}` }));
    }
    return null;
  };
  return {
    list: () => [],
    open,
    describe: (name) => {
      const e = open(name);
      return e ? { sizeBytes: e.sizeBytes, readOnly: e.readOnly, description: e.description } : null;
    },
  };
}

async function codeOf(p: Promise<unknown>): Promise<string> {
  return p.then(
    () => "none",
    (e: unknown) => (isKeelsonError(e) ? e.code : `not a KeelsonError: ${String(e)}`),
  );
}

let server: NbdServer | null = null;
const clients: ReplicaClient[] = [];

async function connect(exportName: string): Promise<ReplicaClient> {
  if (!server) {
    server = new NbdServer(catalog());
    await server.listen({ tcp: "127.0.0.1:0" });
  }
  const c = await ReplicaClient.connect(server.tcpAddress, exportName, 5_000);
  clients.push(c);
  return c;
}

afterEach(async () => {
  for (const c of clients.splice(0)) c.close();
  await server?.close();
  server = null;
});

describe("replica client error identity across the NBD wire", () => {
  it("a round trip over the replica connection returns the bytes written", async () => {
    const c = await connect("plain");
    const data = Buffer.alloc(3 * 4096 + 17, 0x5a);
    data.write("keelson", 100);
    await c.write(4096, data, true);
    expect((await c.read(4096, data.length)).equals(data)).toBe(true);
    await c.zero(4096, 4096, false, false, false);
    expect((await c.read(4096, 4096)).equals(Buffer.alloc(4096))).toBe(true);
    await c.flush();
    expect(c.closed).toBe(false);
  });

  it("a read into a caller's buffer fills that buffer and resolves with it; one of the wrong size is refused", async () => {
    const c = await connect("plain");
    const data = Buffer.alloc(8192, 0x3c);
    await c.write(0, data, false);
    const into = Buffer.alloc(8192);
    const got = await c.read(0, 8192, into);
    expect(got).toBe(into);
    expect(into.equals(data)).toBe(true);
    await expect(c.read(0, 4096, Buffer.alloc(100))).rejects.toThrow(/a read of 4096 bytes into a buffer of 100/);
    expect(c.closed).toBe(false);
  });

  it("a write to a read-only export fails READ_ONLY, not EPOCH_STALE, and the connection stays usable", async () => {
    const c = await connect("snap");
    expect(await codeOf(c.write(0, Buffer.alloc(4096, 1), false))).toBe("READ_ONLY");
    expect(await codeOf(c.zero(0, 4096, true, false, false))).toBe("READ_ONLY");
    expect((await c.read(0, 4096)).equals(Buffer.alloc(4096))).toBe(true);
  });

  it("a request past the end fails OUT_OF_RANGE, not UNAVAILABLE, and the connection stays usable", async () => {
    const c = await connect("plain");
    expect(await codeOf(c.read(SIZE_BYTES - 4096, 8192))).toBe("OUT_OF_RANGE");
    expect(await codeOf(c.zero(SIZE_BYTES, 4096, true, false, false))).toBe("OUT_OF_RANGE");
    expect(c.closed).toBe(false);
    await c.write(0, Buffer.alloc(512, 3), false);
    expect((await c.read(0, 512)).equals(Buffer.alloc(512, 3))).toBe(true);
  });

  it.each(["EPOCH_STALE", "READ_ONLY", "INVALID_ARGUMENT", "PERMISSION_DENIED", "NO_SPACE"] as const)(
    "an export failing with %s: the replica client gets that code and the message",
    async (code) => {
      const c = await connect(`fail-${code}`);
      const results = await Promise.allSettled([c.read(0, 4096), c.write(0, Buffer.alloc(4096), false), c.flush()]);
      for (const r of results) {
        const error: unknown = r.status === "rejected" ? r.reason : null;
        expect(isKeelsonError(error) && error.code).toBe(code);
        expect((error as Error).message).toContain(`volume v1 says ${code.toLowerCase()}`);
      }
    },
  );
});

describe("replica client under a burst", () => {
  it("a burst of 1,000 writes and reads past the in-flight limit: all complete in order of their data, and the replica is not faulted", async () => {
    const c = await connect("plain");
    const writes = Array.from({ length: 1000 }, (_, i) => c.write(i * 1024, Buffer.alloc(1024, (i % 250) + 1), false));
    expect(c.inflight).toBe(MAX_REPLICA_INFLIGHT);
    expect(c.queued).toBe(1000 - MAX_REPLICA_INFLIGHT);
    await Promise.all(writes);
    const reads = await Promise.all(Array.from({ length: 1000 }, (_, i) => c.read(i * 1024, 1024)));
    reads.forEach((r, i) => {
      expect(r.equals(Buffer.alloc(1024, (i % 250) + 1))).toBe(true);
    });
    expect(c.closed).toBe(false);
    expect(c.queued).toBe(0);
  });

  it("past the queue's bound a request fails LIMIT_EXCEEDED at once; the others complete and the connection stays up", async () => {
    const c = await connect("plain");
    const total = MAX_REPLICA_INFLIGHT + MAX_REPLICA_QUEUED + 1;
    const results = await Promise.allSettled(Array.from({ length: total }, () => c.flush()));
    const failed = results.flatMap((r, i) => (r.status === "rejected" ? [{ i, error: r.reason as unknown }] : []));
    expect(failed.map((f) => f.i)).toEqual([total - 1]);
    expect(isKeelsonError(failed[0]?.error) && failed[0]?.error.code).toBe("LIMIT_EXCEEDED");
    expect(c.closed).toBe(false);
    await c.write(0, Buffer.alloc(512, 7), false);
    expect((await c.read(0, 512)).equals(Buffer.alloc(512, 7))).toBe(true);
  });
});

/**
 * A peer without structured replies (an older keelson): it refuses
 * NBD_OPT_STRUCTURED_REPLY with ERR_UNSUP and answers every request with a
 * simple reply carrying `errno` (a read answered with errno 0 carries bytes of
 * PEER_READ_BYTE, sent in two parts). Enough protocol for one OPT_GO, nothing more.
 */
const PEER_READ_BYTE = 0xa5;

async function simpleReplyPeer(errno: number): Promise<{ address: string; close: () => Promise<void> }> {
  const sockets = new Set<net.Socket>();
  const server = net.createServer((socket) => {
    sockets.add(socket);
    const greeting = Buffer.alloc(18);
    NBDMAGIC.copy(greeting, 0);
    IHAVEOPT.copy(greeting, 8);
    greeting.writeUInt16BE(3, 16);
    socket.write(greeting);
    let buf = Buffer.alloc(0);
    let stage: "flags" | "options" | "requests" = "flags";
    const optionReply = (option: number, type: number, data = Buffer.alloc(0)): Buffer => {
      const h = Buffer.alloc(20);
      h.writeBigUInt64BE(OPTION_REPLY_MAGIC, 0);
      h.writeUInt32BE(option, 8);
      h.writeUInt32BE(type, 12);
      h.writeUInt32BE(data.length, 16);
      return Buffer.concat([h, data]);
    };
    socket.on("data", (d: Buffer) => {
      buf = Buffer.concat([buf, d]);
      for (;;) {
        if (stage === "flags" && buf.length >= 4) {
          buf = buf.subarray(4);
          stage = "options";
        } else if (stage === "options" && buf.length >= 16 && buf.length >= 16 + buf.readUInt32BE(12)) {
          const option = buf.readUInt32BE(8);
          buf = buf.subarray(16 + buf.readUInt32BE(12));
          if (option !== Option.GO) {
            socket.write(optionReply(option, OptionReply.ERR_UNSUP));
            continue;
          }
          const info = Buffer.alloc(12);
          info.writeBigUInt64BE(BigInt(SIZE_BYTES), 2);
          info.writeUInt16BE(1, 10);
          socket.write(Buffer.concat([optionReply(option, OptionReply.INFO, info), optionReply(option, OptionReply.ACK)]));
          stage = "requests";
        } else if (stage === "requests" && buf.length >= 28) {
          const isWrite = buf.readUInt16BE(6) === 1;
          const need = 28 + (isWrite ? buf.readUInt32BE(24) : 0);
          if (buf.length < need) return;
          const reply = Buffer.alloc(16);
          reply.writeUInt32BE(SIMPLE_REPLY_MAGIC, 0);
          reply.writeUInt32BE(errno, 4);
          buf.copy(reply, 8, 8, 16);
          const readBytes = errno === 0 && buf.readUInt16BE(6) === 0 ? buf.readUInt32BE(24) : 0;
          buf = buf.subarray(need);
          const data = Buffer.alloc(readBytes, PEER_READ_BYTE);
          socket.write(Buffer.concat([reply, data.subarray(0, readBytes >> 1)]));
          if (readBytes > 0) setTimeout(() => socket.write(data.subarray(readBytes >> 1)), 5);
        } else return;
      }
    });
    socket.on("close", () => sockets.delete(socket));
  });
  await new Promise<void>((resolve) => server.listen(0, "127.0.0.1", resolve));
  const { port } = server.address() as net.AddressInfo;
  return {
    address: `127.0.0.1:${port}`,
    close: () => {
      for (const s of sockets) s.destroy();
      return new Promise((resolve) => server.close(() => resolve()));
    },
  };
}

describe("replica client against a peer without structured replies", () => {
  it("a read's simple reply lands in the caller's buffer, and in a new one without it", async () => {
    const peer = await simpleReplyPeer(0);
    const c = await ReplicaClient.connect(peer.address, "v1#3", 5_000);
    const into = Buffer.alloc(12288);
    expect(await c.read(4096, 12288, into)).toBe(into);
    expect(into.equals(Buffer.alloc(12288, PEER_READ_BYTE))).toBe(true);
    expect((await c.read(0, 4096)).equals(Buffer.alloc(4096, PEER_READ_BYTE))).toBe(true);
    const empty = Buffer.alloc(0);
    expect(await c.read(0, 0, empty)).toBe(empty);
    c.close();
    await peer.close();
  });

  it("errors are bare errnos: EPERM from a writable replica export still means fenced (EPOCH_STALE), EINVAL UNAVAILABLE", async () => {
    for (const [errno, code] of [
      [1, "EPOCH_STALE"],
      [22, "UNAVAILABLE"],
      [28, "NO_SPACE"],
    ] as const) {
      const peer = await simpleReplyPeer(errno);
      const c = await ReplicaClient.connect(peer.address, "v1#3", 5_000);
      expect(c.sizeBytes).toBe(SIZE_BYTES);
      expect(await codeOf(c.write(0, Buffer.alloc(4096, 1), false))).toBe(code);
      expect(await codeOf(c.read(0, 4096))).toBe(code);
      c.close();
      await peer.close();
    }
  });
});
