import assert from "node:assert";
import { type ErrorCode, KeelsonError } from "@keelson/sdk";
import { ByteBudget } from "../../../nbd/byte-budget.js";
import { Connection } from "../../../nbd/connection.js";
import type { BlockStatusCallback, ExportCallback, NbdExport } from "../../../nbd/export.js";
import {
  BASE_ALLOCATION_ID,
  Command,
  CommandFlag,
  Errno,
  MAX_ACTIVITY_PAYLOAD_BYTES,
  MAX_REQUEST_BYTES,
  REQUEST_HEADER_BYTES,
  REQUEST_MAGIC,
  SIMPLE_REPLY_MAGIC,
} from "../../../nbd/protocol.js";
import { RequestBuffers } from "../../../nbd/request-buffers.js";
import { CHUNK_HEADER_BYTES, ReplyFlag, ReplyType, STRUCTURED_REPLY_MAGIC } from "../../../nbd/structured-reply.js";
import { CHUNK_SIZES, chunksOf, FakeSocket } from "../fake-socket.js";
import { type FuzzTarget, tick } from "../target.js";

/** The connection's byte budget: small, so that inputs reach the waits for budget too. */
const FUZZ_BUDGET_BYTES = 4 * 1024 * 1024;

/** Turns of the event loop the harness waits for requests to finish (or a paused socket to resume) before calling it a hang. */
const MAX_SETTLE_TICKS = 1_000;
const FAILURE_CODES: readonly ErrorCode[] = ["NO_SPACE", "UNAVAILABLE", "OUT_OF_RANGE", "INTERNAL", "EPOCH_STALE"];
const WIRE_ERRNOS = new Set<number>(Object.values(Errno));

/** How the export behaves, from the input's first byte. */
interface ExportBehaviour {
  sizeBytes: number;
  readOnly: boolean;
  /** Has saveActivity (a replica export). */
  activity: boolean;
  /** Calls back on a later turn instead of at once. */
  async: boolean;
  /** Fails some requests with a KeelsonError. */
  failing: boolean;
  /** Throws a TypeError from some calls (a bug below the NBD layer, which must still get an answer). */
  throwing: boolean;
}

/**
 * An export that checks what the connection asks of it: nothing past its
 * end, no I/O on a read-only export, no call after close, every callback
 * once. Broken rules are collected, not thrown (the throw would land in the
 * connection, which is what is under test).
 */
class CheckingExport implements NbdExport {
  readonly name = "fuzz";
  readonly description = "fuzz export";
  readonly sizeBytes: number;
  readonly readOnly: boolean;
  readonly violations: string[] = [];
  pending = 0;
  closes = 0;
  readonly saveActivity?: (payload: Buffer, cb: ExportCallback) => void;
  readonly #b: ExportBehaviour;

  constructor(b: ExportBehaviour) {
    this.#b = b;
    this.sizeBytes = b.sizeBytes;
    this.readOnly = b.readOnly;
    if (b.activity) this.saveActivity = (payload, cb) => this.#op("activity", 0, payload.length, cb);
  }

  read(offset: number, length: number, buf: Buffer, bufOffset: number, cb: ExportCallback): void {
    if (buf.length < bufOffset + length)
      this.violations.push(`read of ${length} bytes into a buffer of ${buf.length} at ${bufOffset}`);
    else if (length > 0) {
      buf[bufOffset] = 0xa5;
      buf[bufOffset + length - 1] = 0x5a;
    }
    this.#op("read", offset, length, cb);
  }

  write(offset: number, data: Buffer, _fua: boolean, cb: ExportCallback): void {
    this.#op("write", offset, data.length, cb);
  }

  zero(offset: number, length: number, _o: { trim: boolean; noHole: boolean; fua: boolean }, cb: ExportCallback): void {
    this.#op("zero", offset, length, cb);
  }

  flush(cb: ExportCallback): void {
    this.#op("flush", 0, 0, cb);
  }

  /** Alternating runs of up to 4 KiB, as many as allowed: the connection must frame whatever it is given. */
  blockStatus(offset: number, length: number, maxRuns: number, cb: BlockStatusCallback): void {
    if (maxRuns < 1) this.violations.push(`block status asked for ${maxRuns} runs`);
    const runs: Array<{ lengthBytes: number; status: "data" | "hole" }> = [];
    for (let at = 0; at < length && runs.length < maxRuns; at += 4096) {
      runs.push({ lengthBytes: Math.min(4096, length - at), status: runs.length % 2 === 0 ? "data" : "hole" });
    }
    this.#op("status", offset, length, (error) => cb(error, error ? null : runs));
  }

  close(): void {
    this.closes++;
    if (this.pending > 0) this.violations.push(`closed with ${this.pending} requests running`);
  }

  #op(what: string, offset: number, length: number, cb: ExportCallback): void {
    if (this.closes > 0) this.violations.push(`${what} after close`);
    if (offset + length > this.sizeBytes) this.violations.push(`${what} of ${length} bytes at ${offset} past the end`);
    if (this.readOnly && (what === "write" || what === "zero")) this.violations.push(`${what} on a read-only export`);
    if (this.#b.throwing && offset % 5 === 2) throw new TypeError(`fuzz export: ${what} threw`);
    const error =
      this.#b.failing && offset % 3 === 1
        ? new KeelsonError({
            code: FAILURE_CODES[offset % FAILURE_CODES.length] as ErrorCode,
            message: `fuzz export: ${what} failed`,
          })
        : null;
    if (!this.#b.async) return cb(error);
    this.pending++;
    setImmediate(() => {
      this.pending--;
      try {
        cb(error);
      } catch (e) {
        this.violations.push(`the connection's callback threw: ${String(e)}`);
      }
    });
  }
}

/** What a well-behaved connection must answer for a request stream, walked the way the protocol reads it. */
interface StreamFacts {
  /** Requests that must get exactly one reply each. */
  replies: number;
  /** Handles (hex) of every request header read. */
  handles: Set<string>;
  /** A bad magic: the server must hang up. */
  badMagic: boolean;
  disconnect: boolean;
}

function factsOf(stream: Buffer): StreamFacts {
  const facts: StreamFacts = { replies: 0, handles: new Set(), badMagic: false, disconnect: false };
  let at = 0;
  while (stream.length - at >= REQUEST_HEADER_BYTES) {
    if (stream.readUInt32BE(at) !== REQUEST_MAGIC) {
      facts.badMagic = true;
      break;
    }
    const flags = stream.readUInt16BE(at + 4);
    const type = stream.readUInt16BE(at + 6);
    facts.handles.add(stream.toString("hex", at + 8, at + 16));
    const length = stream.readUInt32BE(at + 24);
    at += REQUEST_HEADER_BYTES;
    if (type === Command.WRITE || type === Command.KEELSON_ACTIVITY) {
      const limit = type === Command.WRITE ? MAX_REQUEST_BYTES : MAX_ACTIVITY_PAYLOAD_BYTES;
      // A payload over the limit is refused at once and skipped; one within it is answered once received.
      if (length > limit) facts.replies++;
      if (stream.length - at < length) break;
      if (length <= limit) facts.replies++;
      at += length;
    } else if (type === Command.DISC && (flags & ~CommandFlag.FUA) === 0) {
      facts.disconnect = true;
      break;
    } else facts.replies++;
  }
  return facts;
}

/** Checks one reply (one write call) against the negotiated format; returns its handle (hex). */
function checkReply(reply: Buffer, structured: boolean): string {
  if (!structured) {
    assert.ok(reply.length >= 16, `a simple reply of ${reply.length} bytes`);
    assert.equal(reply.readUInt32BE(0), SIMPLE_REPLY_MAGIC, "simple reply magic");
    const errno = reply.readUInt32BE(4);
    assert.ok(errno === 0 || WIRE_ERRNOS.has(errno), `errno ${errno} is not one the protocol allows`);
    if (errno !== 0) assert.equal(reply.length, 16, "an error reply carries no data");
    return reply.toString("hex", 8, 16);
  }
  assert.ok(reply.length >= CHUNK_HEADER_BYTES, `a chunk of ${reply.length} bytes`);
  assert.equal(reply.readUInt32BE(0), STRUCTURED_REPLY_MAGIC, "structured reply magic");
  assert.equal(reply.readUInt16BE(4), ReplyFlag.DONE, "every reply is one final chunk");
  const type = reply.readUInt16BE(6);
  const types: number[] = [ReplyType.NONE, ReplyType.OFFSET_DATA, ReplyType.BLOCK_STATUS, ReplyType.ERROR];
  assert.ok(types.includes(type), `chunk type ${type}`);
  assert.equal(reply.readUInt32BE(16), reply.length - CHUNK_HEADER_BYTES, "chunk length field");
  if (type === ReplyType.BLOCK_STATUS) {
    const payload = reply.length - CHUNK_HEADER_BYTES;
    assert.ok(payload >= 12 && (payload - 4) % 8 === 0, `a block status payload of ${payload} bytes`);
    assert.equal(reply.readUInt32BE(CHUNK_HEADER_BYTES), BASE_ALLOCATION_ID, "block status context id");
  }
  if (type === ReplyType.ERROR) assert.ok(WIRE_ERRNOS.has(reply.readUInt32BE(20)), `error chunk errno ${reply.readUInt32BE(20)}`);
  return reply.toString("hex", 8, 16);
}

async function settle(until: () => boolean): Promise<void> {
  for (let i = 0; i < MAX_SETTLE_TICKS && !until(); i++) await tick();
}

/**
 * The NBD transmission phase (request parsing, payloads, replies) on one
 * connection. Byte 0 picks the export's behaviour and the reply format, byte
 * 1 how bytes arrive, the rest is what the client sends after the handshake.
 * Invariants: nothing throws out of the connection; every request read gets
 * exactly one well-formed reply with its handle, unless the client vanished
 * first; a bad magic closes the connection; the export never sees I/O past
 * its end, a write to a read-only export, or a call after close; it is
 * closed exactly once, after its last request.
 */
export const nbdTransmission: FuzzTarget = {
  name: "nbd-transmission",
  maxLen: 4096,
  dictionary: [
    u32(REQUEST_MAGIC),
    ...Object.values(Command).map((c) => u16(c)),
    ...Object.values(CommandFlag).map((f) => u16(f)),
    u32(MAX_REQUEST_BYTES),
    u32(MAX_ACTIVITY_PAYLOAD_BYTES),
    u32(4096),
  ],
  seeds: transmissionSeeds,
  async run(input) {
    const config = input[0] ?? 0;
    const behaviour: ExportBehaviour = {
      sizeBytes: config & 0x80 ? 2 ** 50 : 1024 * 1024,
      readOnly: (config & 2) !== 0,
      activity: (config & 4) !== 0,
      async: (config & 8) !== 0,
      failing: (config & 16) !== 0,
      throwing: (config & 32) !== 0,
    };
    const structured = (config & 1) !== 0;
    const delivery = input[1] ?? 0;
    const stream = input.subarray(2);
    const chunkSize = CHUNK_SIZES[delivery & 7] ?? 0;
    const socket = new FakeSocket({ slowPeer: (config & 64) !== 0 });
    const exp = new CheckingExport(behaviour);
    let closedCalls = 0;
    const chunks = chunksOf(stream, chunkSize);
    const leftover = delivery & 8 ? (chunks.shift() ?? Buffer.alloc(0)) : Buffer.alloc(0);
    const raw = socket.asSocket();
    const budget = new ByteBudget(FUZZ_BUDGET_BYTES);
    const conn = new Connection(
      raw,
      // With structured replies the client selected base:allocation, so BLOCK_STATUS reaches the export.
      {
        export: exp,
        leftover,
        structuredReplies: structured,
        allocationContextId: structured ? BASE_ALLOCATION_ID : null,
        socket: raw,
      },
      budget,
      new RequestBuffers(),
      () => closedCalls++,
    );
    // A connection that stopped reading (its client does not read replies, or it waits for budget) is not fed more.
    let delivered = 0;
    for (const chunk of chunks) {
      await settle(() => !socket.isPaused);
      if (socket.isPaused || socket.destroyed || socket.ended) break;
      delivered++;
      socket.emit("data", chunk);
      // Requests of an async export complete on later event-loop turns: let some complete between chunks.
      if (behaviour.async) await tick();
      else if (chunkSize !== 0) await Promise.resolve();
    }
    // Requests waiting for budget or for replies to drain are in flight on the connection, not in the export.
    // So are requests the connection holds unparsed while it waits for replies to drain (it is paused then).
    await settle(() => socket.destroyed || (exp.pending === 0 && conn.inflight === 0 && !socket.isPaused));
    await tick();
    // Facts of what the server was given: a stream it stopped reading counts only up to there.
    const given = delivered === chunks.length ? stream : Buffer.concat([leftover, ...chunks.slice(0, delivered)]);
    const facts = factsOf(given);
    const handles = socket.written.map((r) => checkReply(r, structured));
    for (const h of handles) assert.ok(facts.handles.has(h), `a reply to handle ${h}, which no request had`);
    // After the server hung up (bad magic) replies of requests still running are dropped with the socket.
    // A connection that stopped reading (replies its client does not read back up, or it waits for budget)
    // has parsed only part of what it holds: no more replies than requests is all that can be asked.
    const stalled = socket.isPaused && !socket.destroyed;
    if ((socket.destroyed && behaviour.async) || stalled) {
      assert.ok(handles.length <= facts.replies, "more replies than requests");
    } else assert.equal(handles.length, facts.replies, `${facts.replies} requests to answer, ${handles.length} replies`);
    if (facts.badMagic && !facts.disconnect && !stalled)
      assert.ok(socket.destroyed, "a bad request magic must close the connection");
    assert.equal(socket.lateWrites, 0, "writes after the socket was ended");
    socket.hangUp();
    await settle(() => exp.pending === 0 && closedCalls > 0);
    assert.deepEqual(exp.violations, []);
    assert.equal(exp.closes, 1, "the export is closed exactly once");
    assert.equal(closedCalls, 1, "onClosed is called exactly once");
  },
};

function u32(v: number): Buffer {
  const b = Buffer.alloc(4);
  b.writeUInt32BE(v);
  return b;
}

function u16(v: number): Buffer {
  const b = Buffer.alloc(2);
  b.writeUInt16BE(v);
  return b;
}

function request(type: number, flags: number, handle: number, offset: number, length: number, payload?: Buffer): Buffer {
  const h = Buffer.alloc(REQUEST_HEADER_BYTES);
  h.writeUInt32BE(REQUEST_MAGIC, 0);
  h.writeUInt16BE(flags, 4);
  h.writeUInt16BE(type, 6);
  h.writeUInt32BE(handle, 12);
  h.writeUInt32BE(Math.floor(offset / 2 ** 32), 16);
  h.writeUInt32BE(offset >>> 0, 20);
  h.writeUInt32BE(length, 24);
  return payload ? Buffer.concat([h, payload]) : h;
}

/** Sessions a real client has: writes, reads, flush, trim, zeroes, a disconnect; in several export modes. */
function transmissionSeeds(): Buffer[] {
  const session = Buffer.concat([
    request(Command.WRITE, CommandFlag.FUA, 1, 4096, 16, Buffer.alloc(16, 7)),
    request(Command.READ, 0, 2, 4096, 16),
    request(Command.FLUSH, 0, 3, 0, 0),
    request(Command.TRIM, 0, 4, 8192, 4096),
    request(Command.WRITE_ZEROES, CommandFlag.NO_HOLE, 5, 0, 512),
    request(Command.READ, 0, 6, 1024 * 1024 - 8, 16),
    request(Command.KEELSON_ACTIVITY, 0, 7, 0, 8, Buffer.alloc(8, 1)),
    request(Command.BLOCK_STATUS, 0, 8, 0, 4096),
    request(Command.DISC, 0, 9, 0, 0),
  ]);
  const withConfig = (config: number, delivery: number) => Buffer.concat([Buffer.from([config, delivery]), session]);
  return [withConfig(0, 0), withConfig(1, 1), withConfig(4 | 8, 2), withConfig(2 | 16, 8), withConfig(1 | 32 | 64, 3)];
}
