import net from "node:net";
import { KeelsonError } from "@keelson/sdk";
import {
  ClientFlag,
  Command,
  CommandFlag,
  Errno,
  IHAVEOPT,
  NBDMAGIC,
  OPTION_REPLY_MAGIC,
  Option,
  OptionReply,
  REQUEST_MAGIC,
  SIMPLE_REPLY_MAGIC,
} from "../nbd/protocol.js";

/** Requests one replica connection keeps in flight; more wait for a free slot. */
export const MAX_REPLICA_INFLIGHT = 128;
/** Time to connect and negotiate. */
const CONNECT_TIMEOUT_MS = 5_000;

/**
 * Why a replica request failed: the replica answered an error, or it could not
 * be reached in time. Replicas are writable exports, so EPERM from one means
 * its fence moved past this connection's epoch.
 */
function replicaError(kind: "errno" | "timeout" | "closed", detail: string, errno = 0): KeelsonError {
  const code =
    kind === "errno" && errno === Errno.EPERM
      ? "EPOCH_STALE"
      : kind === "errno" && errno === Errno.ENOSPC
        ? "NO_SPACE"
        : "UNAVAILABLE";
  return new KeelsonError({ code, message: `replica ${detail}` });
}

interface Pending {
  resolve: (data: Buffer | null) => void;
  reject: (error: KeelsonError) => void;
  /** Bytes of payload the reply carries (reads). */
  replyBytes: number;
  timer: NodeJS.Timeout;
}

/**
 * An NBD client for replica traffic: fixed newstyle negotiation with OPT_GO,
 * then pipelined requests matched to simple replies by handle. Every request
 * has a deadline (the replica timeout); a request that misses it fails and
 * the connection is closed, so a replica that stalls cannot stall the volume.
 */
export class ReplicaClient {
  readonly name: string;
  readonly sizeBytes: number;
  readonly #socket: net.Socket;
  readonly #timeoutMs: number;
  readonly #pending = new Map<bigint, Pending>();
  #nextHandle = 1n;
  #buf: Buffer = Buffer.alloc(0);
  #closed: KeelsonError | null = null;

  private constructor(socket: net.Socket, name: string, sizeBytes: number, timeoutMs: number) {
    this.#socket = socket;
    this.name = name;
    this.sizeBytes = sizeBytes;
    this.#timeoutMs = timeoutMs;
    socket.on("data", (d: Buffer) => this.#onData(d));
    socket.on("close", () => this.#fail(replicaError("closed", `${name}: connection closed`)));
    socket.on("error", () => undefined);
  }

  /** True once the connection is closed or failed; nothing more can be sent. */
  get closed(): boolean {
    return this.#closed !== null;
  }

  get inflight(): number {
    return this.#pending.size;
  }

  /** Connects to `host:port` (or a unix socket path) and opens export `exportName` (e.g. `VOLUME#EPOCH`). */
  static async connect(address: string, exportName: string, timeoutMs: number): Promise<ReplicaClient> {
    const at = address.lastIndexOf(":");
    const socket = address.startsWith("/")
      ? net.connect(address)
      : net.connect(Number(address.slice(at + 1)), address.slice(0, at));
    if (!address.startsWith("/")) socket.setNoDelay(true);
    const reader = new HandshakeReader(socket);
    try {
      await new Promise<void>((resolve, reject) => {
        const timer = setTimeout(() => reject(new Error(`no connection in ${CONNECT_TIMEOUT_MS} ms`)), CONNECT_TIMEOUT_MS);
        socket.once("connect", () => {
          clearTimeout(timer);
          resolve();
        });
        socket.once("error", (e) => {
          clearTimeout(timer);
          reject(e);
        });
      });
      const sizeBytes = await negotiate(socket, reader, exportName);
      reader.detach();
      const client = new ReplicaClient(socket, `${exportName}@${address}`, sizeBytes, timeoutMs);
      if (reader.rest.length > 0) client.#onData(reader.rest);
      return client;
    } catch (error) {
      socket.destroy();
      if (error instanceof KeelsonError) throw error;
      throw replicaError("closed", `${exportName}@${address}: ${(error as Error).message}`);
    }
  }

  read(offset: number, length: number): Promise<Buffer> {
    return this.#send(Command.READ, 0, offset, length, null, length) as Promise<Buffer>;
  }

  async write(offset: number, data: Buffer, fua: boolean): Promise<void> {
    await this.#send(Command.WRITE, fua ? CommandFlag.FUA : 0, offset, data.length, data, 0);
  }

  async zero(offset: number, length: number, trim: boolean, noHole: boolean, fua: boolean): Promise<void> {
    const flags = (noHole ? CommandFlag.NO_HOLE : 0) | (fua ? CommandFlag.FUA : 0);
    await this.#send(trim ? Command.TRIM : Command.WRITE_ZEROES, trim ? flags & CommandFlag.FUA : flags, offset, length, null, 0);
  }

  async flush(): Promise<void> {
    await this.#send(Command.FLUSH, 0, 0, 0, null, 0);
  }

  /** Closes the connection; requests in flight fail. Idempotent. */
  close(): void {
    this.#fail(replicaError("closed", `${this.name}: closed`));
  }

  #send(
    type: number,
    flags: number,
    offset: number,
    length: number,
    payload: Buffer | null,
    replyBytes: number,
  ): Promise<Buffer | null> {
    if (this.#closed) return Promise.reject(this.#closed);
    if (this.#pending.size >= MAX_REPLICA_INFLIGHT) {
      return Promise.reject(replicaError("closed", `${this.name}: ${MAX_REPLICA_INFLIGHT} requests already in flight`));
    }
    const handle = this.#nextHandle++;
    const header = Buffer.alloc(28);
    header.writeUInt32BE(REQUEST_MAGIC, 0);
    header.writeUInt16BE(flags, 4);
    header.writeUInt16BE(type, 6);
    header.writeBigUInt64BE(handle, 8);
    header.writeBigUInt64BE(BigInt(offset), 16);
    header.writeUInt32BE(length, 24);
    return new Promise((resolve, reject) => {
      const timer = setTimeout(() => {
        this.#fail(replicaError("timeout", `${this.name}: no reply in ${this.#timeoutMs} ms`));
      }, this.#timeoutMs);
      this.#pending.set(handle, { resolve, reject, replyBytes, timer });
      this.#socket.write(payload ? Buffer.concat([header, payload]) : header);
    });
  }

  #onData(d: Buffer): void {
    this.#buf = this.#buf.length === 0 ? d : Buffer.concat([this.#buf, d]);
    while (this.#buf.length >= 16) {
      if (this.#buf.readUInt32BE(0) !== SIMPLE_REPLY_MAGIC)
        return this.#fail(replicaError("closed", `${this.name}: bad reply magic`));
      const errno = this.#buf.readUInt32BE(4);
      const handle = this.#buf.readBigUInt64BE(8);
      const p = this.#pending.get(handle);
      if (!p) return this.#fail(replicaError("closed", `${this.name}: reply for unknown handle ${handle}`));
      const payload = errno === 0 ? p.replyBytes : 0;
      if (this.#buf.length < 16 + payload) return;
      const data = payload > 0 ? Buffer.from(this.#buf.subarray(16, 16 + payload)) : null;
      this.#buf = this.#buf.subarray(16 + payload);
      this.#pending.delete(handle);
      clearTimeout(p.timer);
      if (errno === 0) p.resolve(data);
      else p.reject(replicaError("errno", `${this.name}: error ${errno}`, errno));
    }
  }

  #fail(error: KeelsonError): void {
    if (!this.#closed) this.#closed = error;
    this.#socket.destroy();
    for (const p of this.#pending.values()) {
      clearTimeout(p.timer);
      p.reject(error);
    }
    this.#pending.clear();
  }
}

/** Buffers handshake bytes and hands out exact-length reads. */
class HandshakeReader {
  readonly #socket: net.Socket;
  rest: Buffer = Buffer.alloc(0);
  #waiter: (() => void) | null = null;
  #ended = false;
  readonly #onData = (d: Buffer): void => {
    this.rest = Buffer.concat([this.rest, d]);
    this.#waiter?.();
  };
  readonly #onEnd = (): void => {
    this.#ended = true;
    this.#waiter?.();
  };

  constructor(socket: net.Socket) {
    this.#socket = socket;
    socket.on("data", this.#onData);
    socket.on("close", this.#onEnd);
  }

  async take(n: number): Promise<Buffer> {
    const deadline = Date.now() + CONNECT_TIMEOUT_MS;
    while (this.rest.length < n) {
      if (this.#ended) throw new Error("connection closed during negotiation");
      if (Date.now() > deadline) throw new Error("negotiation timed out");
      await new Promise<void>((resolve) => {
        this.#waiter = resolve;
        setTimeout(resolve, 100);
      });
      this.#waiter = null;
    }
    const out = this.rest.subarray(0, n);
    this.rest = this.rest.subarray(n);
    return out;
  }

  detach(): void {
    this.#socket.off("data", this.#onData);
    this.#socket.off("close", this.#onEnd);
  }
}

/** Fixed newstyle negotiation with OPT_GO; resolves with the export size. */
async function negotiate(socket: net.Socket, r: HandshakeReader, exportName: string): Promise<number> {
  const greeting = await r.take(18);
  if (!greeting.subarray(0, 8).equals(NBDMAGIC) || !greeting.subarray(8, 16).equals(IHAVEOPT)) {
    throw new Error("not an NBD server (bad greeting)");
  }
  const flags = Buffer.alloc(4);
  flags.writeUInt32BE(ClientFlag.FIXED_NEWSTYLE | ClientFlag.NO_ZEROES, 0);
  const name = Buffer.from(exportName, "utf8");
  const opt = Buffer.alloc(16 + 4 + name.length + 2);
  IHAVEOPT.copy(opt, 0);
  opt.writeUInt32BE(Option.GO, 8);
  opt.writeUInt32BE(4 + name.length + 2, 12);
  opt.writeUInt32BE(name.length, 16);
  name.copy(opt, 20);
  opt.writeUInt16BE(0, 20 + name.length);
  socket.write(Buffer.concat([flags, opt]));
  let sizeBytes = -1;
  for (let replies = 0; replies < 64; replies++) {
    const head = await r.take(20);
    if (head.readBigUInt64BE(0) !== OPTION_REPLY_MAGIC) throw new Error("bad option reply magic");
    const type = head.readUInt32BE(12);
    const data = await r.take(head.readUInt32BE(16));
    if (type === OptionReply.ACK) {
      if (sizeBytes < 0) throw new Error("server acknowledged OPT_GO without export info");
      return sizeBytes;
    }
    if (type === OptionReply.INFO && data.length >= 12 && data.readUInt16BE(0) === 0) sizeBytes = Number(data.readBigUInt64BE(2));
    else if (type >= 2 ** 31) {
      throw new KeelsonError({
        code: type === OptionReply.ERR_UNKNOWN ? "EPOCH_STALE" : "UNAVAILABLE",
        message: `replica refused export ${exportName} (reply ${type - 2 ** 31}${type === OptionReply.ERR_UNKNOWN ? ": unknown or fenced at a newer epoch" : ""})`,
      });
    }
  }
  throw new Error("too many option replies");
}
