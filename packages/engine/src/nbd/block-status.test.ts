import net from "node:net";
import { afterEach, describe, expect, it } from "vitest";
import type { AllocationRun, BlockStatusCallback, ExportCallback, ExportCatalog, NbdExport } from "./export.js";
import {
  AllocationState,
  BASE_ALLOCATION,
  BASE_ALLOCATION_ID,
  Command,
  CommandFlag,
  Errno,
  IHAVEOPT,
  Option,
  OptionReply,
  REQUEST_MAGIC,
} from "./protocol.js";
import { NbdServer } from "./server.js";
import { CHUNK_HEADER_BYTES, ReplyType } from "./structured-reply.js";

// Metadata contexts in the handshake (LIST/SET_META_CONTEXT) and
// NBD_CMD_BLOCK_STATUS on the wire, against an export whose answers the test
// chooses, including answers the protocol forbids.

const SIZE_BYTES = 1024 * 1024;

class MapExport implements NbdExport {
  readonly name = "v";
  readonly description = "block status test export";
  readonly sizeBytes = SIZE_BYTES;
  readonly readOnly = false;
  /** What the export answers; by default 64 KiB of data then holes, cut to the query. */
  answer: (offset: number, length: number, maxRuns: number) => AllocationRun[] = (_o, length, maxRuns) =>
    [
      { lengthBytes: Math.min(length, 65536), status: "data" as const },
      ...(length > 65536 ? [{ lengthBytes: length - 65536, status: "hole" as const }] : []),
    ].slice(0, maxRuns);
  readonly queries: Array<[number, number, number]> = [];

  read(_o: number, _l: number, _b: Buffer, _bo: number, cb: ExportCallback): void {
    cb(null);
  }
  write(_o: number, _d: Buffer, _f: boolean, cb: ExportCallback): void {
    cb(null);
  }
  zero(_o: number, _l: number, _x: unknown, cb: ExportCallback): void {
    cb(null);
  }
  flush(cb: ExportCallback): void {
    cb(null);
  }
  blockStatus(offset: number, length: number, maxRuns: number, cb: BlockStatusCallback): void {
    this.queries.push([offset, length, maxRuns]);
    cb(null, this.answer(offset, length, maxRuns));
  }
  close(): void {}
}

/** A raw client over one socket: exact-length reads, options and requests by hand. */
class Client {
  readonly socket: net.Socket;
  #buf = Buffer.alloc(0);
  #wake: (() => void) | null = null;
  #closed = false;

  constructor(socket: net.Socket) {
    this.socket = socket;
    socket.on("data", (d: Buffer) => {
      this.#buf = Buffer.concat([this.#buf, d]);
      this.#wake?.();
    });
    socket.on("close", () => {
      this.#closed = true;
      this.#wake?.();
    });
  }

  static async connect(address: string): Promise<Client> {
    const at = address.lastIndexOf(":");
    const socket = net.connect(Number(address.slice(at + 1)), address.slice(0, at));
    await new Promise((resolve) => socket.once("connect", resolve));
    const c = new Client(socket);
    await c.read(18);
    const flags = Buffer.alloc(4);
    flags.writeUInt32BE(3, 0);
    socket.write(flags);
    return c;
  }

  async read(n: number): Promise<Buffer> {
    while (this.#buf.length < n) {
      if (this.#closed) throw new Error("closed");
      await new Promise<void>((r) => {
        this.#wake = r;
      });
    }
    const out = this.#buf.subarray(0, n);
    this.#buf = this.#buf.subarray(n);
    return out;
  }

  /** Sends an option and collects its replies up to the final one: [type, data] each. */
  async option(option: number, data: Buffer): Promise<Array<[number, Buffer]>> {
    const head = Buffer.alloc(16);
    IHAVEOPT.copy(head, 0);
    head.writeUInt32BE(option, 8);
    head.writeUInt32BE(data.length, 12);
    this.socket.write(Buffer.concat([head, data]));
    const replies: Array<[number, Buffer]> = [];
    for (;;) {
      const h = await this.read(20);
      const type = h.readUInt32BE(12);
      replies.push([type, Buffer.from(await this.read(h.readUInt32BE(16)))]);
      if (type !== OptionReply.META_CONTEXT && type !== OptionReply.INFO) return replies;
    }
  }

  /** One request; its structured reply's chunk type and payload. */
  async request(type: number, flags: number, offset: number, length: number): Promise<{ type: number; payload: Buffer }> {
    const h = Buffer.alloc(28);
    h.writeUInt32BE(REQUEST_MAGIC, 0);
    h.writeUInt16BE(flags, 4);
    h.writeUInt16BE(type, 6);
    h.writeBigUInt64BE(7n, 8);
    h.writeBigUInt64BE(BigInt(offset), 16);
    h.writeUInt32BE(length, 24);
    this.socket.write(h);
    const chunk = await this.read(CHUNK_HEADER_BYTES);
    return { type: chunk.readUInt16BE(6), payload: Buffer.from(await this.read(chunk.readUInt32BE(16))) };
  }
}

function metaContextData(exportName: string, queries: string[]): Buffer {
  const parts = [Buffer.alloc(4), Buffer.from(exportName)];
  parts[0]?.writeUInt32BE(exportName.length, 0);
  const count = Buffer.alloc(4);
  count.writeUInt32BE(queries.length, 0);
  parts.push(count);
  for (const q of queries) {
    const len = Buffer.alloc(4);
    len.writeUInt32BE(Buffer.byteLength(q), 0);
    parts.push(len, Buffer.from(q));
  }
  return Buffer.concat(parts);
}

function goData(name: string): Buffer {
  const b = Buffer.alloc(4 + name.length + 2);
  b.writeUInt32BE(name.length, 0);
  b.write(name, 4);
  return b;
}

/** Descriptors of a BLOCK_STATUS payload: [length, flags] each, after the context id. */
function descriptors(payload: Buffer): Array<[number, number]> {
  const out: Array<[number, number]> = [];
  for (let at = 4; at < payload.length; at += 8) out.push([payload.readUInt32BE(at), payload.readUInt32BE(at + 4)]);
  return out;
}

let server: NbdServer | null = null;
const clients: Client[] = [];

afterEach(async () => {
  for (const c of clients.splice(0)) c.socket.destroy();
  await server?.close();
  server = null;
});

async function connect(exp: MapExport, names: string[] = ["v"]): Promise<Client> {
  if (!server) {
    const catalog: ExportCatalog = {
      list: () => names.map((name) => ({ name, description: "" })),
      open: (name) => (names.includes(name) ? exp : null),
      describe: (name) => (names.includes(name) ? { sizeBytes: SIZE_BYTES, readOnly: false, description: "" } : null),
    };
    server = new NbdServer(catalog, { bufferBytes: 16 * 1024 * 1024 });
    await server.listen({ tcp: "127.0.0.1:0" });
  }
  const c = await Client.connect(server.tcpAddress);
  clients.push(c);
  return c;
}

/** Structured replies, base:allocation selected for `v`, then GO `go`. */
async function negotiated(exp: MapExport, go = "v", names: string[] = ["v"]): Promise<Client> {
  const c = await connect(exp, names);
  expect((await c.option(Option.STRUCTURED_REPLY, Buffer.alloc(0)))[0]?.[0]).toBe(OptionReply.ACK);
  const set = await c.option(Option.SET_META_CONTEXT, metaContextData("v", ["base:allocation"]));
  expect(set.map(([t]) => t)).toEqual([OptionReply.META_CONTEXT, OptionReply.ACK]);
  expect(set[0]?.[1].readUInt32BE(0)).toBe(BASE_ALLOCATION_ID);
  expect(set[0]?.[1].toString("utf8", 4)).toBe(BASE_ALLOCATION);
  expect((await c.option(Option.GO, goData(go))).at(-1)?.[0]).toBe(OptionReply.ACK);
  return c;
}

describe("meta contexts and NBD_CMD_BLOCK_STATUS", () => {
  it("answers a query with one BLOCK_STATUS chunk: data runs 0, holes HOLE|ZERO; REQ_ONE gets one descriptor", async () => {
    const exp = new MapExport();
    const c = await negotiated(exp);
    const r = await c.request(Command.BLOCK_STATUS, 0, 4096, 256 * 1024);
    expect(r.type).toBe(ReplyType.BLOCK_STATUS);
    expect(r.payload.readUInt32BE(0)).toBe(BASE_ALLOCATION_ID);
    expect(descriptors(r.payload)).toEqual([
      [65536, 0],
      [256 * 1024 - 65536, AllocationState.HOLE | AllocationState.ZERO],
    ]);
    const one = await c.request(Command.BLOCK_STATUS, CommandFlag.REQ_ONE, 0, 256 * 1024);
    expect(descriptors(one.payload)).toEqual([[65536, 0]]);
    expect(exp.queries).toEqual([
      [4096, 256 * 1024, 2048],
      [0, 256 * 1024, 1],
    ]);
  });

  it("refuses with EINVAL: no context selected, a query of 0 bytes, one past the end, a flag not for queries; FUA is accepted", async () => {
    const exp = new MapExport();
    const plain = await connect(exp);
    await plain.option(Option.STRUCTURED_REPLY, Buffer.alloc(0));
    await plain.option(Option.GO, goData("v"));
    const none = await plain.request(Command.BLOCK_STATUS, 0, 0, 4096);
    expect(none.type).toBe(ReplyType.ERROR);
    expect(none.payload.readUInt32BE(0)).toBe(Errno.EINVAL);
    expect(none.payload.toString("utf8", 6)).toContain("base:allocation");

    const c = await negotiated(exp);
    for (const [flags, offset, length] of [
      [0, 0, 0],
      [0, SIZE_BYTES - 4096, 8192],
      [CommandFlag.NO_HOLE, 0, 4096],
    ] as const) {
      const r = await c.request(Command.BLOCK_STATUS, flags, offset, length);
      expect(r.type, `flags ${flags} offset ${offset} length ${length}`).toBe(ReplyType.ERROR);
      expect(r.payload.readUInt32BE(0)).toBe(Errno.EINVAL);
    }
    expect(exp.queries).toEqual([]);
    // The server advertises FUA, so it must accept it on every command (it means nothing to a query).
    const fua = await c.request(Command.BLOCK_STATUS, CommandFlag.FUA, 0, 4096);
    expect(fua.type).toBe(ReplyType.BLOCK_STATUS);
  });

  it("an answer the protocol forbids (no run, an empty run, too many bytes or runs) reaches the client as an error, never as a chunk", async () => {
    const exp = new MapExport();
    const c = await negotiated(exp);
    const bad: Array<(o: number, l: number, m: number) => AllocationRun[]> = [
      () => [],
      () => [{ lengthBytes: 0, status: "data" }],
      (_o, l) => [{ lengthBytes: l + 512, status: "data" }],
      () => [
        { lengthBytes: 512, status: "data" },
        { lengthBytes: 512, status: "hole" },
      ],
    ];
    for (const answer of bad) {
      exp.answer = answer;
      const r = await c.request(Command.BLOCK_STATUS, CommandFlag.REQ_ONE, 0, 4096);
      expect(r.type).toBe(ReplyType.ERROR);
      expect(r.payload.toString("utf8", 6)).toMatch(/^INTERNAL: /);
    }
  });

  it("LIST names base:allocation for no query, `base:` or its full name, nothing for another namespace; LIST needs an export that exists; SET needs structured replies", async () => {
    const exp = new MapExport();
    const early = await connect(exp);
    const refused = await early.option(Option.SET_META_CONTEXT, metaContextData("v", ["base:allocation"]));
    expect(refused.map(([t]) => t)).toEqual([OptionReply.ERR_INVALID]);

    const c = await connect(exp);
    await c.option(Option.STRUCTURED_REPLY, Buffer.alloc(0));
    for (const queries of [[], ["base:"], ["base:allocation"], ["x-other:", "base:allocation"]]) {
      const replies = await c.option(Option.LIST_META_CONTEXT, metaContextData("v", queries));
      expect(replies.map(([t]) => t)).toEqual([OptionReply.META_CONTEXT, OptionReply.ACK]);
      expect(replies[0]?.[1].toString("utf8", 4)).toBe(BASE_ALLOCATION);
    }
    const other = await c.option(Option.LIST_META_CONTEXT, metaContextData("v", ["qemu:dirty-bitmap:x"]));
    expect(other.map(([t]) => t)).toEqual([OptionReply.ACK]);
    const unknown = await c.option(Option.LIST_META_CONTEXT, metaContextData("nope", ["base:allocation"]));
    expect(unknown.map(([t]) => t)).toEqual([OptionReply.ERR_UNKNOWN]);
    const malformed = await c.option(Option.SET_META_CONTEXT, metaContextData("v", ["base:allocation"]).subarray(0, 10));
    expect(malformed.map(([t]) => t)).toEqual([OptionReply.ERR_INVALID]);
  });

  it("base:allocation selected for one export does not carry over to another chosen with GO; a SET without it clears it", async () => {
    const exp = new MapExport();
    const c = await negotiated(exp, "w", ["v", "w"]);
    const r = await c.request(Command.BLOCK_STATUS, 0, 0, 4096);
    expect(r.type).toBe(ReplyType.ERROR);
    expect(r.payload.readUInt32BE(0)).toBe(Errno.EINVAL);

    const d = await connect(exp, ["v", "w"]);
    await d.option(Option.STRUCTURED_REPLY, Buffer.alloc(0));
    await d.option(Option.SET_META_CONTEXT, metaContextData("v", ["base:allocation"]));
    expect((await d.option(Option.SET_META_CONTEXT, metaContextData("v", []))).map(([t]) => t)).toEqual([OptionReply.ACK]);
    await d.option(Option.GO, goData("v"));
    expect((await d.request(Command.BLOCK_STATUS, 0, 0, 4096)).type).toBe(ReplyType.ERROR);

    // A SET that fails still replaces the selection (the protocol says so): nothing is selected after it.
    const f = await connect(exp, ["v", "w"]);
    await f.option(Option.STRUCTURED_REPLY, Buffer.alloc(0));
    await f.option(Option.SET_META_CONTEXT, metaContextData("v", ["base:allocation"]));
    const malformed = metaContextData("v", ["base:allocation"]).subarray(0, 9);
    expect((await f.option(Option.SET_META_CONTEXT, malformed)).map(([t]) => t)).toEqual([OptionReply.ERR_INVALID]);
    await f.option(Option.GO, goData("v"));
    expect((await f.request(Command.BLOCK_STATUS, 0, 0, 4096)).type).toBe(ReplyType.ERROR);
  });
});
