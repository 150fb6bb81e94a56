import assert from "node:assert";
import type { ExportCallback, ExportCatalog, NbdExport } from "../../../nbd/export.js";
import { MAX_OPTION_BYTES, MAX_OPTIONS_PER_CONNECTION, negotiateOrThrow } from "../../../nbd/handshake.js";
import { ClientFlag, IHAVEOPT, NBDMAGIC, OPTION_REPLY_MAGIC, Option, OptionReply } from "../../../nbd/protocol.js";
import { HandshakeAborted } from "../../../nbd/socket-reader.js";
import { CHUNK_SIZES, chunksOf, FakeSocket } from "../fake-socket.js";
import { type FuzzTarget, tick, within } from "../target.js";

/** Longest a handshake may take once the client has sent everything and hung up. */
const HANDSHAKE_BOUND_MS = 2_000;
const MAX_OPTION_DRAIN_BYTES = 1024 * 1024;
const GREETING_BYTES = 18;

/** An export that does nothing: the handshake only opens it (or not). */
function idleExport(name: string, sizeBytes: number, readOnly: boolean, onClose: () => void): NbdExport {
  const done = (cb: ExportCallback) => cb(null);
  return {
    name,
    description: `fuzz export ${name} ✓`,
    sizeBytes,
    readOnly,
    read: (_o, _l, _b, _bo, cb) => done(cb),
    write: (_o, _d, _f, cb) => done(cb),
    zero: (_o, _l, _opts, cb) => done(cb),
    flush: (cb) => done(cb),
    close: onClose,
  };
}

/** Two exports ("disk" writable, "ro" read-only); counts opens so a leaked open shows. */
class FuzzCatalog implements ExportCatalog {
  opened = 0;
  readonly #exports = [
    { name: "disk", sizeBytes: 1024 * 1024, readOnly: false, description: "a writable disk" },
    { name: "ro", sizeBytes: 12288, readOnly: true, description: "ein schreibgeschütztes Abbild" },
  ];

  list() {
    return this.#exports.map(({ name, description }) => ({ name, description }));
  }

  open(name: string): NbdExport | null {
    const e = this.#exports.find((x) => x.name === name);
    if (!e) return null;
    this.opened++;
    return idleExport(e.name, e.sizeBytes, e.readOnly, () => undefined);
  }

  describe(name: string) {
    const e = this.#exports.find((x) => x.name === name);
    return e ? { sizeBytes: e.sizeBytes, readOnly: e.readOnly, description: e.description } : null;
  }
}

/** A reply the server sent during option haggling. */
interface OptionReplyMessage {
  option: number;
  type: number;
}

/** What the client sent, as the server must read it. */
interface ClientConversation {
  /** Options sent completely, in order, up to where the server must stop reading: each must get a final reply (ACK or an error). */
  options: number[];
  /** Whether an EXPORT_NAME ended it (answered with the export's details, no option reply, or a closed connection). */
  exportName: boolean;
  noZeroes: boolean;
}

function conversationOf(client: Buffer): ClientConversation {
  const out: ClientConversation = { options: [], exportName: false, noZeroes: false };
  if (client.length < 4) return out;
  const flags = client.readUInt32BE(0);
  if ((flags & ~(ClientFlag.FIXED_NEWSTYLE | ClientFlag.NO_ZEROES)) !== 0) return out;
  out.noZeroes = (flags & ClientFlag.NO_ZEROES) !== 0;
  let at = 4;
  while (out.options.length < MAX_OPTIONS_PER_CONNECTION && client.length - at >= 16) {
    if (!client.subarray(at, at + 8).equals(IHAVEOPT)) break;
    const option = client.readUInt32BE(at + 8);
    const length = client.readUInt32BE(at + 12);
    if (length > MAX_OPTION_BYTES && (length > MAX_OPTION_DRAIN_BYTES || option === Option.EXPORT_NAME)) break;
    if (client.length - at - 16 < length) break;
    at += 16 + length;
    if (option === Option.EXPORT_NAME) {
      out.exportName = true;
      break;
    }
    out.options.push(option);
    if (option === Option.ABORT) break;
  }
  return out;
}

/**
 * Parses the server's output: greeting, option replies, and at the end the
 * answer to an EXPORT_NAME when `exportReplyBytes` is not 0 (it has no magic:
 * it starts with the export's size).
 */
function repliesOf(output: Buffer, exportReplyBytes: number): { replies: OptionReplyMessage[]; exportReply: boolean } {
  assert.ok(output.length >= GREETING_BYTES, "the server sent no greeting");
  assert.ok(output.subarray(0, 8).equals(NBDMAGIC) && output.subarray(8, 16).equals(IHAVEOPT), "bad greeting");
  const replies: OptionReplyMessage[] = [];
  let at = GREETING_BYTES;
  while (at < output.length) {
    const rest = output.length - at;
    if (exportReplyBytes > 0 && rest === exportReplyBytes && output.readBigUInt64BE(at) !== OPTION_REPLY_MAGIC) {
      return { replies, exportReply: true };
    }
    assert.ok(rest >= 20, `a truncated option reply of ${rest} bytes`);
    assert.equal(output.readBigUInt64BE(at), OPTION_REPLY_MAGIC, `bad option reply magic at byte ${at}`);
    const length = output.readUInt32BE(at + 16);
    assert.ok(rest - 20 >= length, `option reply at byte ${at} claims ${length} bytes, ${rest - 20} follow`);
    replies.push({ option: output.readUInt32BE(at + 8), type: output.readUInt32BE(at + 12) });
    at += 20 + length;
  }
  return { replies, exportReply: false };
}

/** The options each informational reply type may answer; any other reply type is final. */
const INFORMATIONAL: ReadonlyMap<number, readonly number[]> = new Map([
  [OptionReply.SERVER, [Option.LIST]],
  [OptionReply.INFO, [Option.INFO, Option.GO]],
  [OptionReply.META_CONTEXT, [Option.LIST_META_CONTEXT, Option.SET_META_CONTEXT]],
]);

/**
 * Checks that every complete option got its final reply, in order, unless the
 * handshake had ended, and that each informational reply answers an option
 * that may have one and comes before that option's final reply.
 */
function checkAnswered(sent: number[], replies: OptionReplyMessage[], succeeded: boolean): void {
  const finals: OptionReplyMessage[] = [];
  for (const r of replies) {
    const answers = INFORMATIONAL.get(r.type);
    if (answers === undefined) {
      finals.push(r);
      continue;
    }
    assert.ok(answers.includes(r.option), `reply type ${r.type} answers option ${r.option}`);
    const pending = sent[finals.length];
    assert.equal(r.option, pending, `reply type ${r.type} for option ${r.option}, the option pending is ${pending}`);
  }
  for (const [i, r] of finals.entries()) {
    assert.equal(r.option, sent[i], `reply ${i} answers option ${r.option}, the client sent ${sent[i]}`);
  }
  const last = finals.at(-1);
  const ended = succeeded && last?.option === Option.GO && last.type === OptionReply.ACK;
  if (!ended) assert.equal(finals.length, sent.length, `${sent.length} options sent, ${finals.length} answered`);
}

/**
 * The NBD handshake (fixed newstyle option haggling) against a client that
 * sends the input: byte 0 picks how the bytes arrive (chunk size), the rest
 * is what the client sends. Invariants: it settles within a bound after the
 * client hangs up; the only rejection is HandshakeAborted; an export is
 * opened exactly when one is returned; the output is well-formed and every
 * complete option got a final reply; what the server wrote stays bounded.
 */
export const nbdHandshake: FuzzTarget = {
  name: "nbd-handshake",
  maxLen: 4096,
  dictionary: [
    IHAVEOPT,
    NBDMAGIC,
    ...Object.values(Option).map((o) => u32(o)),
    u32(ClientFlag.FIXED_NEWSTYLE | ClientFlag.NO_ZEROES),
    Buffer.from("disk"),
    Buffer.from("ro"),
    u16(0),
    u16(1),
    u16(2),
    u16(3),
  ],
  seeds: handshakeSeeds,
  async run(input) {
    const chunkSize = CHUNK_SIZES[(input[0] ?? 0) & 7] ?? 0;
    const client = input.subarray(1);
    const socket = new FakeSocket();
    const catalog = new FuzzCatalog();
    const outcome = negotiateOrThrow(socket.asSocket(), catalog).then(
      (result) => ({ result, error: null as unknown }),
      (error: unknown) => ({ result: null, error }),
    );
    for (const chunk of chunksOf(client, chunkSize)) {
      socket.emit("data", chunk);
      // A microtask turn lets the negotiation read what came so far (a full event-loop turn costs 20 times more).
      if (chunkSize !== 0) await Promise.resolve();
    }
    // Everything sent is read before the client hangs up: after its EOF a reply can no longer reach it.
    await tick();
    socket.hangUp();
    const { result, error } = await within(outcome, HANDSHAKE_BOUND_MS, "the handshake", assert.fail);
    if (error !== null && !(error instanceof HandshakeAborted)) throw error;
    assert.equal(catalog.opened, result ? 1 : 0, `${catalog.opened} exports opened, ${result ? 1 : 0} returned`);
    // Replies are small and one per option, of which there are at most MAX_OPTIONS_PER_CONNECTION.
    assert.ok(socket.writtenBytes <= 64 * 1024 + 2 * client.length, `the server wrote ${socket.writtenBytes} bytes`);
    const output = Buffer.concat(socket.written);
    const sent = conversationOf(client);
    // A returned export was picked by GO (whose ACK ends the replies) or by EXPORT_NAME (whose answer ends the output).
    const exportReplyBytes = result !== null && sent.exportName ? (sent.noZeroes ? 10 : 134) : 0;
    const { replies, exportReply } = repliesOf(output, exportReplyBytes);
    checkAnswered(sent.options, replies, result !== null && !exportReply);
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

function option(code: number, data: Buffer = Buffer.alloc(0)): Buffer {
  return Buffer.concat([IHAVEOPT, u32(code), u32(data.length), data]);
}

function infoRequest(name: string, infos: number[]): Buffer {
  const n = Buffer.from(name);
  return Buffer.concat([u32(n.length), n, u16(infos.length), ...infos.map(u16)]);
}

function metaRequest(name: string, queries: string[]): Buffer {
  const n = Buffer.from(name);
  const q = queries.map((x) => Buffer.from(x));
  return Buffer.concat([u32(n.length), n, u32(q.length), ...q.flatMap((b) => [u32(b.length), b])]);
}

/** Valid client conversations: what nbdinfo, qemu and the kernel client send. */
function handshakeSeeds(): Buffer[] {
  const flags = u32(ClientFlag.FIXED_NEWSTYLE | ClientFlag.NO_ZEROES);
  const conv = (chunking: number, ...parts: Buffer[]) => Buffer.concat([Buffer.from([chunking]), flags, ...parts]);
  return [
    conv(0, option(Option.STRUCTURED_REPLY), option(Option.GO, infoRequest("disk", [3, 1, 2]))),
    conv(0, option(Option.LIST), option(Option.INFO, infoRequest("ro", [2])), option(Option.ABORT)),
    conv(1, option(Option.EXPORT_NAME, Buffer.from("disk"))),
    conv(0, option(Option.GO, infoRequest("nope", [])), option(Option.GO, infoRequest("ro", [3]))),
    conv(2, option(Option.LIST_META_CONTEXT, Buffer.alloc(8)), option(Option.STARTTLS), option(Option.ABORT)),
    conv(
      0,
      option(Option.STRUCTURED_REPLY),
      option(Option.LIST_META_CONTEXT, metaRequest("disk", [])),
      option(Option.SET_META_CONTEXT, metaRequest("disk", ["base:allocation", "qemu:dirty-bitmap:x"])),
      option(Option.GO, infoRequest("disk", [])),
    ),
  ];
}
