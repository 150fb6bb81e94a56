import path from "node:path";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { NbdServer } from "../src/nbd/server.js";
import { admitReservation } from "../src/qos/admission.js";
import { encodeActivityLog } from "../src/store/activity-record.js";
import { Pool } from "../src/store/pool.js";
import { ReplicaCatalog } from "../src/target/replica-catalog.js";
import { startDaemon, type TestDaemon, tempDir } from "./helpers/daemon.js";
import { NbdTestClient, RawConnection } from "./helpers/nbd-client.js";
import { waitFor } from "./helpers/wait.js";

const MIB = 1024 * 1024;
const EINVAL = 22;
const ENOSPC = 28;
const ENOTSUP = 95;
const ERR_UNSUP = 2 ** 31 + 1;
const ERR_INVALID = 2 ** 31 + 3;
const ERR_UNKNOWN = 2 ** 31 + 6;
const ERR_TOO_BIG = 2 ** 31 + 9;

// One daemon for the whole file, with a bystander client doing real I/O
// throughout: every case must leave the daemon up and the bystander unharmed.
let dir: ReturnType<typeof tempDir>;
let d: TestDaemon;
let bystander: NbdTestClient;
let bystanderRounds = 0;

async function bystanderRoundTrip(): Promise<void> {
  const data = Buffer.alloc(8192, (bystanderRounds++ % 250) + 1);
  expect((await bystander.write(MIB, data)).error).toBe(0);
  const back = await bystander.read(MIB, data.length);
  expect(back.error).toBe(0);
  expect(back.data.equals(data)).toBe(true);
}

async function connected(): Promise<NbdTestClient> {
  return NbdTestClient.open(d.nbdAddress, "target");
}

beforeAll(async () => {
  dir = tempDir("keelson-malformed-");
  d = await startDaemon({ poolPath: path.join(dir.path, "pool.img"), poolSize: "256M", dir: dir.path });
  await d.client().createVolume({ name: "target", sizeBytes: 16 * MIB });
  bystander = await connected();
});

afterAll(async () => {
  // The daemon goes whatever the bystander's last round trip says (a failed run must not leave it running).
  try {
    await bystanderRoundTrip();
  } finally {
    bystander.close();
    await d.stop();
    dir[Symbol.dispose]();
  }
  expect(d.child.exitCode).toBe(0);
});

describe("malformed handshake: the prescribed reply or a clean close of that connection only", () => {
  it("unknown client flags: the server closes the connection", async () => {
    const raw = await RawConnection.connect(d.nbdAddress);
    expect(await raw.read(18)).not.toBeNull();
    raw.write(Buffer.from([0, 0, 0, 0x80]));
    expect(await raw.waitClosed()).toBe(true);
    await bystanderRoundTrip();
  });

  it("bad option magic: the server closes the connection", async () => {
    const raw = await RawConnection.connect(d.nbdAddress);
    await raw.greet();
    raw.write(Buffer.from("NOTAMAGIC_______", "ascii"));
    expect(await raw.waitClosed()).toBe(true);
    await bystanderRoundTrip();
  });

  it("unknown option: NBD_REP_ERR_UNSUP and the negotiation goes on", async () => {
    const raw = await RawConnection.connect(d.nbdAddress);
    await raw.greet();
    raw.sendOption(4242, Buffer.from("junk"));
    expect((await raw.optionReply())?.type).toBe(ERR_UNSUP);
    expect(await raw.go("target")).toBe(16 * MIB);
    raw.close();
  });

  it("NBD_OPT_LIST with data: ERR_INVALID; oversized option: ERR_TOO_BIG; both keep the connection", async () => {
    const raw = await RawConnection.connect(d.nbdAddress);
    await raw.greet();
    raw.sendOption(3, Buffer.from("x"));
    expect((await raw.optionReply())?.type).toBe(ERR_INVALID);
    raw.sendOption(6, Buffer.alloc(100_000));
    expect((await raw.optionReply())?.type).toBe(ERR_TOO_BIG);
    raw.sendOption(3);
    const list = await raw.optionReply();
    expect(list?.type).toBe(2);
    raw.close();
  });

  it("malformed NBD_OPT_GO data (name length past the end): ERR_INVALID", async () => {
    const raw = await RawConnection.connect(d.nbdAddress);
    await raw.greet();
    const bad = Buffer.alloc(8);
    bad.writeUInt32BE(1000, 0);
    raw.sendOption(7, bad);
    expect((await raw.optionReply())?.type).toBe(ERR_INVALID);
    raw.close();
    await bystanderRoundTrip();
  });

  it("NBD_OPT_GO for an unknown export: ERR_UNKNOWN; NBD_OPT_EXPORT_NAME for one: close", async () => {
    const raw = await RawConnection.connect(d.nbdAddress);
    await raw.greet();
    await expect(raw.go("no-such-volume")).rejects.toThrow(ERR_UNKNOWN.toString(16));
    raw.sendOption(1, Buffer.from("no-such-volume"));
    expect(await raw.waitClosed()).toBe(true);
  });

  it("a truncated option (header, then the client vanishes): the daemon carries on", async () => {
    const raw = await RawConnection.connect(d.nbdAddress);
    await raw.greet();
    raw.write(Buffer.from("IHAVEOPT\0\0\0\x07\0\0\x01\0partial", "latin1"));
    raw.close();
    await bystanderRoundTrip();
  });
});

const STRUCTURED_REPLY_MAGIC = 0x668e33ef;
const REPLY_FLAG_DONE = 1;
const REPLY_TYPE_NONE = 0;
const REPLY_TYPE_OFFSET_DATA = 1;
const REPLY_TYPE_ERROR = 2 ** 15 + 1;
const OPT_STRUCTURED_REPLY = 8;

/** A raw connection to `target` with structured replies negotiated. */
async function structuredConnection(): Promise<RawConnection> {
  const raw = await RawConnection.connect(d.nbdAddress);
  await raw.greet();
  raw.sendOption(OPT_STRUCTURED_REPLY);
  expect((await raw.optionReply())?.type).toBe(1);
  expect(await raw.go("target")).toBe(16 * MIB);
  return raw;
}

/** Reads one chunk and checks it is the final one of `handle`'s reply. */
async function finalChunk(raw: RawConnection, handle: number): Promise<{ type: number; payload: Buffer }> {
  const c = await raw.chunk();
  expect(c?.magic).toBe(STRUCTURED_REPLY_MAGIC);
  expect(c?.handle).toBe(handle);
  expect(c?.flags).toBe(REPLY_FLAG_DONE);
  return { type: c?.type ?? -1, payload: c?.payload ?? Buffer.alloc(0) };
}

/** The errno and message of an ERROR chunk's payload. */
function errorOf(chunk: { type: number; payload: Buffer }): { errno: number; message: string } {
  expect(chunk.type).toBe(REPLY_TYPE_ERROR);
  const length = chunk.payload.readUInt16BE(4);
  expect(chunk.payload.length).toBe(6 + length);
  return { errno: chunk.payload.readUInt32BE(0), message: chunk.payload.toString("utf8", 6) };
}

describe("structured replies (NBD_OPT_STRUCTURED_REPLY)", () => {
  it("the option with data: ERR_INVALID; without: ACK, then reads are OFFSET_DATA chunks and writes NONE, each final", async () => {
    const raw = await RawConnection.connect(d.nbdAddress);
    await raw.greet();
    raw.sendOption(OPT_STRUCTURED_REPLY, Buffer.from("x"));
    expect((await raw.optionReply())?.type).toBe(ERR_INVALID);
    raw.sendOption(OPT_STRUCTURED_REPLY);
    expect((await raw.optionReply())?.type).toBe(1);
    expect(await raw.go("target")).toBe(16 * MIB);
    const data = Buffer.alloc(8192, 0x3c);
    data.write("structured", 5);
    raw.write(Buffer.concat([RawConnection.header(1, 0, 1, 2 * MIB, data.length), data]));
    expect((await finalChunk(raw, 1)).type).toBe(REPLY_TYPE_NONE);
    raw.write(RawConnection.header(0, 0, 2, 2 * MIB, data.length));
    const read = await finalChunk(raw, 2);
    expect(read.type).toBe(REPLY_TYPE_OFFSET_DATA);
    expect(Number(read.payload.readBigUInt64BE(0))).toBe(2 * MIB);
    expect(read.payload.subarray(8).equals(data)).toBe(true);
    raw.write(RawConnection.header(3, 0, 3, 0, 0));
    expect((await finalChunk(raw, 3)).type).toBe(REPLY_TYPE_NONE);
    raw.write(RawConnection.header(0, 0, 4, 0, 0));
    expect((await finalChunk(raw, 4)).type).toBe(REPLY_TYPE_NONE); // an empty read has no data chunk to send
    raw.close();
    await bystanderRoundTrip();
  });

  it("errors are ERROR chunks with the errno and `CODE: detail`; the stream stays in sync", async () => {
    const raw = await structuredConnection();
    raw.write(RawConnection.header(0, 0, 1, 16 * MIB - 4096, 8192));
    const pastEnd = errorOf(await finalChunk(raw, 1));
    expect(pastEnd.errno).toBe(EINVAL);
    expect(pastEnd.message).toMatch(/^OUT_OF_RANGE: 8192 bytes at offset 16773120 reach past the end of export target/);
    raw.write(RawConnection.header(77, 0, 2, 0, 0));
    const unknown = errorOf(await finalChunk(raw, 2));
    expect(unknown.errno).toBe(EINVAL);
    expect(unknown.message).toBe("INVALID_ARGUMENT: command 77 is not supported");
    raw.write(Buffer.concat([RawConnection.header(1, 0, 3, 16 * MIB - 4096, 8192), Buffer.alloc(8192, 7)]));
    const writePastEnd = errorOf(await finalChunk(raw, 3));
    expect(writePastEnd.errno).toBe(ENOSPC);
    expect(writePastEnd.message.startsWith("OUT_OF_RANGE: ")).toBe(true);
    raw.write(RawConnection.header(0, 0, 4, 0, 4096));
    expect((await finalChunk(raw, 4)).type).toBe(REPLY_TYPE_OFFSET_DATA);
    raw.close();
    await bystanderRoundTrip();
  });
});

describe("malformed transmission requests", () => {
  it("unknown command: EINVAL, and the connection keeps working", async () => {
    const c = await connected();
    expect((await c.custom(77, 0, 0, 0)).error).toBe(EINVAL);
    expect((await c.read(0, 4096)).error).toBe(0);
    await c.disconnect();
  });

  it("unknown command flag: EINVAL", async () => {
    const c = await connected();
    expect((await c.custom(0, 1 << 9, 0, 4096)).error).toBe(EINVAL);
    expect((await c.custom(3, 1 << 1, 0, 0)).error).toBe(EINVAL);
    await c.disconnect();
  });

  it("read past the end: EINVAL; write past the end: ENOSPC (payload consumed, stream stays in sync)", async () => {
    const c = await connected();
    expect((await c.read(16 * MIB - 4096, 8192)).error).toBe(EINVAL);
    expect((await c.read(2 ** 52, 4096)).error).toBe(EINVAL);
    expect((await c.write(16 * MIB - 4096, Buffer.alloc(8192, 1))).error).toBe(ENOSPC);
    expect((await c.writeZeroes(16 * MIB, 4096)).error).toBe(ENOSPC);
    expect((await c.trim(16 * MIB, 4096)).error).toBe(EINVAL);
    const ok = Buffer.alloc(4096, 9);
    expect((await c.write(0, ok)).error).toBe(0);
    expect((await c.read(0, 4096)).data.equals(ok)).toBe(true);
    await c.disconnect();
  });

  it("a write larger than the maximum request: EINVAL, its payload skipped", async () => {
    const c = await connected();
    const big = Buffer.alloc(33 * MIB, 5);
    expect((await c.write(0, big)).error).toBe(EINVAL);
    expect((await c.read(0, 4096)).error).toBe(0);
    await c.disconnect();
  });

  it("keelson's activity log command: EINVAL on an application export, with a malformed or oversized payload, or with flags; the payload is skipped and the stream stays in sync", async () => {
    const ACTIVITY = 0x4b41;
    const good = encodeActivityLog({ sequence: 1, extentBytes: 4 * MIB, all: false, extents: [0] });
    const app = await connected();
    expect((await app.custom(ACTIVITY, 0, 0, good.length, good)).error).toBe(EINVAL);
    expect((await app.read(0, 4096)).error).toBe(0);
    await app.disconnect();
    // A replica export, as a peer engine's frontend reaches it (the cluster's grant stood in for: a single engine has none).
    const pool = await Pool.open({
      admit: admitReservation,
      path: path.join(dir.path, "replica-pool.img"),
      createSizeBytes: 64 * MIB,
    });
    const server = new NbdServer(
      new ReplicaCatalog(pool, null, { grant: async () => "write", isNode: async () => undefined }).forClient,
    );
    try {
      await pool.createVolume({ name: "replica", sizeBytes: 16 * MIB });
      await pool.fenceVolume("replica", 1);
      await server.listen({ tcp: "127.0.0.1:0" });
      const replica = await NbdTestClient.open(server.tcpAddress, "replica#1");
      expect((await replica.custom(ACTIVITY, 0, 0, 7, Buffer.alloc(7, 1))).error).toBe(EINVAL);
      expect((await replica.custom(ACTIVITY, 1, 0, good.length, good)).error).toBe(EINVAL);
      expect((await replica.custom(ACTIVITY, 0, 0, 200 * 1024, Buffer.alloc(200 * 1024, 1))).error).toBe(EINVAL);
      expect((await replica.custom(ACTIVITY, 0, 0, good.length, good)).error).toBe(0);
      expect((await replica.read(0, 4096)).error).toBe(0);
      await replica.disconnect();
      expect(pool.getVolume("replica").record.activity).toMatchObject({ epoch: 1, sequence: 1, extents: [0] });
    } finally {
      await server.close();
      await pool.close();
    }
  });

  it("WRITE_ZEROES with FAST_ZERO and NO_HOLE: ENOTSUP (it would be slow)", async () => {
    const c = await connected();
    expect((await c.writeZeroes(0, 4096, (1 << 4) | (1 << 1))).error).toBe(ENOTSUP);
    expect((await c.writeZeroes(0, 4096, 1 << 4)).error).toBe(0);
    await c.disconnect();
  });

  it("bad request magic: hard disconnect of that connection only", async () => {
    const c = await connected();
    c.raw.write(Buffer.alloc(28, 0xab));
    expect(await c.raw.waitClosed()).toBe(true);
    await bystanderRoundTrip();
  });

  it("truncated packet (half a header, half a write payload), then the client vanishes", async () => {
    const c1 = await connected();
    c1.raw.write(RawConnection.header(0, 0, 1, 0, 4096).subarray(0, 13));
    c1.close();
    const c2 = await connected();
    c2.raw.write(Buffer.concat([RawConnection.header(1, 0, 1, 0, 65536), Buffer.alloc(1000)]));
    c2.close();
    await bystanderRoundTrip();
  });

  it("client disconnects with requests in flight: the daemon finishes them and carries on", async () => {
    const c = await connected();
    for (let i = 0; i < 64; i++) void c.write(i * 65536, Buffer.alloc(65536, i));
    c.close();
    await bystanderRoundTrip();
    // The daemon lets the closed connection go once its requests are done: only the bystander's stays.
    await waitFor(async () => (await d.client().getVolume({ name: "target" })).connections === 1, {
      what: "the disconnected client's connection closed on the daemon (1 left, the bystander's)",
      timeoutMs: 10_000,
    });
  });
});
