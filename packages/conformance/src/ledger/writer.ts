// The ledger writer: N NBD connections writing stamped 4 KiB blocks at
// random over one shared region (so connections overlap on blocks), each
// with `depth` writes in flight and a periodic FLUSH, recording everything in
// a Ledger. It never lies: the ledger holds exactly what the client saw.
// When a connection dies it reconnects (to a URI the caller hands back, after
// re-attaching the volume elsewhere) with bounded retries and backoff.

import { setTimeout as sleep } from "node:timers/promises";
import { ConformanceError, messageOf } from "../errors.js";
import { MAX_IN_FLIGHT, type NbdClientConnection, openNbd } from "../nbd/client.js";
import { TRANSMISSION_FLAG } from "../nbd/protocol.js";
import { BLOCK_BYTES, stampBlock } from "./block.js";
import { Ledger, type LedgerCounts } from "./ledger.js";
import type { AckSeries } from "./timeline.js";

/** Most connections one writer opens. */
export const MAX_CONNECTIONS = 64;
/** Most writes in flight per connection; one request slot stays free for the flush. */
export const MAX_DEPTH = MAX_IN_FLIGHT - 1;
/** Largest region: the ledger keeps a history (~250 bytes) per block written, so the region bounds its memory (~250 MiB at most). */
export const MAX_REGION_BYTES = 4 * 1024 * 1024 * 1024;
/** Connect attempts after a connection died, before that connection is given up. */
export const MAX_RECONNECT_ATTEMPTS = 30;
export const RECONNECT_BACKOFF_MIN_MS = 50;
export const RECONNECT_BACKOFF_MAX_MS = 2_000;
/** Pause of a lane after the server refused a write, so a read-only or full export is not spun on. */
export const REFUSED_WRITE_BACKOFF_MS = 20;
export const DEFAULT_CONNECT_TIMEOUT_MS = 10_000;
export const DEFAULT_REQUEST_TIMEOUT_MS = 15_000;
/** Errors (reconnect failures) kept for the report; older ones are dropped. */
export const MAX_ERRORS = 50;

/** Options of {@link LedgerWriter.start}. */
export interface LedgerWriterOptions {
  /** One NBD URI per connection (the same one repeated is fine), or a single URI for all. */
  uris: string[];
  /** Bytes written over, from `regionOffsetBytes`; a multiple of 4096. */
  regionBytes: number;
  /** Start of the region in the export. Default 0. */
  regionOffsetBytes?: number;
  connections: number;
  /** Writes in flight per connection. */
  depth: number;
  /** Each connection flushes this often; 0 never (then flushed mode requires only FUA writes). */
  flushEveryMs: number;
  /** Picks blocks (and the writer id when none is given): inject a seeded one. */
  random: () => number;
  /**
   * The URI connection `index` reconnects to after it died (the caller may
   * re-attach the volume elsewhere first). Called once per attempt, by each
   * connection on its own, so it should share one re-attach between them.
   * Default: the connection's previous URI.
   */
  reconnect?: (index: number) => Promise<string>;
  /** Limit of one connect + handshake. Default DEFAULT_CONNECT_TIMEOUT_MS. */
  connectTimeoutMs?: number;
  /** A request unanswered this long gives its connection up (then it reconnects). Default DEFAULT_REQUEST_TIMEOUT_MS. */
  requestTimeoutMs?: number;
  /** Send every write with FUA (the export must offer it). Default false. */
  fua?: boolean;
  /** Id stamped into every block. Default: 32 random bits from `random`. */
  writerId?: number;
  /** Wall clock in ms (stamps, ack times, firstAckAfter). Default Date.now. */
  now?: () => number;
}

/** Where one connection is. */
export type ConnectionState =
  | { state: "open"; uri: string }
  | { state: "reconnecting"; attempt: number; lastError: string | undefined }
  | { state: "failed"; reason: string }
  | { state: "stopped" };

/** Ledger counts plus the writer's own. */
export interface WriterCounts extends LedgerCounts {
  reconnects: number;
  connectionsFailed: number;
}

function invalid(message: string): ConformanceError {
  return new ConformanceError({ code: "INVALID_ARGUMENT", message });
}

function validate(options: LedgerWriterOptions): string[] {
  const { connections, depth, regionBytes, flushEveryMs } = options;
  const regionOffsetBytes = options.regionOffsetBytes ?? 0;
  if (!Number.isInteger(connections) || connections < 1 || connections > MAX_CONNECTIONS) {
    throw invalid(`connections ${connections} is not 1..${MAX_CONNECTIONS}`);
  }
  if (!Number.isInteger(depth) || depth < 1 || depth > MAX_DEPTH) throw invalid(`depth ${depth} is not 1..${MAX_DEPTH}`);
  if (
    !Number.isSafeInteger(regionBytes) ||
    regionBytes < BLOCK_BYTES ||
    regionBytes % BLOCK_BYTES !== 0 ||
    regionBytes > MAX_REGION_BYTES
  ) {
    throw invalid(`regionBytes ${regionBytes} is not a multiple of ${BLOCK_BYTES} in ${BLOCK_BYTES}..${MAX_REGION_BYTES}`);
  }
  if (!Number.isSafeInteger(regionOffsetBytes) || regionOffsetBytes < 0 || regionOffsetBytes % BLOCK_BYTES !== 0) {
    throw invalid(`regionOffsetBytes ${regionOffsetBytes} is not a non-negative multiple of ${BLOCK_BYTES}`);
  }
  if (!Number.isFinite(flushEveryMs) || flushEveryMs < 0) throw invalid(`flushEveryMs ${flushEveryMs} is not >= 0`);
  if (options.uris.length === 1) return Array.from({ length: connections }, () => options.uris[0] as string);
  if (options.uris.length !== connections) {
    throw invalid(`uris has ${options.uris.length} entries; give one, or one per connection (${connections})`);
  }
  return [...options.uris];
}

export class LedgerWriter {
  /** Everything sent and acknowledged; verifyLedger reads it. */
  readonly ledger: Ledger;
  readonly #options: LedgerWriterOptions;
  /** Current URI per connection (a reconnect may change it). */
  readonly #uris: string[];
  readonly #states: ConnectionState[];
  /** Ends with each connection's supervisor: after stop(), or once it gave up. */
  readonly #supervisors: Promise<void>[] = [];
  /** Aborted by stop(): ends backoff sleeps and reconnect waits. */
  readonly #stopAbort = new AbortController();
  /** One per open connection; aborted when it closes or on stop(), to wake its flusher. */
  readonly #drives = new Set<AbortController>();
  /** Connections open now, so redirect() can close them. */
  readonly #live = new Set<NbdClientConnection>();
  readonly #blocks: number;
  #mode: "running" | "paused" | "stopping" = "running";
  /** While paused: lanes wait on `promise` until resume() or stop() calls `open`. */
  #gate: { promise: Promise<void>; open: () => void } | undefined;
  /** Writes and flushes awaiting replies, over all connections. */
  #inFlight = 0;
  #idleWaiters: (() => void)[] = [];
  #reconnects = 0;
  #errors: string[] = [];

  private constructor(options: LedgerWriterOptions, uris: string[], writerId: number) {
    this.#options = options;
    this.#uris = uris;
    this.#states = uris.map((uri) => ({ state: "open", uri }));
    this.#blocks = options.regionBytes / BLOCK_BYTES;
    this.ledger = new Ledger({
      writerId,
      regionOffsetBytes: options.regionOffsetBytes ?? 0,
      regionBytes: options.regionBytes,
      now: options.now ?? Date.now,
    });
  }

  /**
   * Opens every connection and starts writing. Rejects with ConformanceError
   * INVALID_ARGUMENT for bad options or an export smaller than the region, or
   * whatever openNbd rejects with; nothing stays open when it rejects.
   */
  static async start(options: LedgerWriterOptions): Promise<LedgerWriter> {
    const uris = validate(options);
    const opened = await Promise.allSettled(uris.map((uri) => LedgerWriter.#open(options, uri)));
    const connections = opened.flatMap((r) => (r.status === "fulfilled" ? [r.value] : []));
    const failure = opened.find((r) => r.status === "rejected");
    if (failure !== undefined) {
      for (const c of connections) c.close();
      throw failure.reason;
    }
    const writerId = options.writerId ?? Math.floor(options.random() * 2 ** 32) >>> 0;
    const writer = new LedgerWriter(options, uris, writerId);
    connections.forEach((connection, index) => {
      writer.#supervisors.push(writer.#supervise(index, connection));
    });
    return writer;
  }

  static async #open(options: LedgerWriterOptions, uri: string): Promise<NbdClientConnection> {
    const connection = await openNbd(uri, {
      timeoutMs: options.connectTimeoutMs ?? DEFAULT_CONNECT_TIMEOUT_MS,
      requestTimeoutMs: options.requestTimeoutMs ?? DEFAULT_REQUEST_TIMEOUT_MS,
    });
    const endBytes = (options.regionOffsetBytes ?? 0) + options.regionBytes;
    if (connection.sizeBytes < endBytes) {
      connection.close();
      throw invalid(`export ${uri} has ${connection.sizeBytes} bytes; the ledger region ends at ${endBytes}`);
    }
    if (options.fua && (connection.transmissionFlags & TRANSMISSION_FLAG.SEND_FUA) === 0) {
      connection.close();
      throw new ConformanceError({
        code: "NOT_SUPPORTED",
        message: `export ${uri} does not offer FUA; the writer was asked for FUA writes`,
      });
    }
    return connection;
  }

  counts(): WriterCounts {
    const connectionsFailed = this.#states.filter((s) => s.state === "failed").length;
    return { ...this.ledger.counts(), reconnects: this.#reconnects, connectionsFailed };
  }

  connectionStates(): ConnectionState[] {
    return this.#states.map((s) => ({ ...s }));
  }

  /** Reconnect failures and give-ups, oldest first (at most MAX_ERRORS). */
  get errors(): string[] {
    return [...this.#errors];
  }

  /** See {@link Ledger.firstAckAfter}. */
  firstAckAfter(atMs: number, options: { onNewConnection?: boolean } = {}): number | undefined {
    return this.ledger.firstAckAfter(atMs, options);
  }

  ackedPerSecond(): AckSeries {
    return this.ledger.ackedPerSecond();
  }

  /**
   * Moves the writer to a new attachment, as an application that fails over
   * does: closes every open connection (each then reconnects through the
   * `reconnect` option, which hands the new URI), waits until they are
   * closed, then fences the ledger, so no write sent to the old attachment
   * may land after this. Resolves once the old connections are gone.
   */
  async redirect(): Promise<void> {
    const old = [...this.#live];
    for (const c of old) c.close();
    await Promise.all(old.map((c) => c.whenClosed));
    this.ledger.fence();
  }

  /** Stops sending; resolves once every write and flush in flight has its reply. Idempotent. */
  pause(): Promise<void> {
    if (this.#mode === "running") {
      this.#mode = "paused";
      let open: () => void = () => undefined;
      const promise = new Promise<void>((resolve) => {
        open = resolve;
      });
      this.#gate = { promise, open };
    }
    return this.#whenIdle();
  }

  /** Sends again after pause(). No-op when running or stopping. */
  resume(): void {
    if (this.#mode !== "paused") return;
    this.#mode = "running";
    this.#gate?.open();
    this.#gate = undefined;
  }

  /**
   * Stops: lanes finish their write, each live connection sends a last flush
   * (recorded like any other), then closes. Resolves with the ledger. Idempotent.
   */
  async stop(): Promise<Ledger> {
    if (this.#mode !== "stopping") {
      this.#mode = "stopping";
      this.#gate?.open();
      this.#gate = undefined;
      this.#stopAbort.abort();
      for (const drive of this.#drives) drive.abort();
    }
    await Promise.all(this.#supervisors);
    return this.ledger;
  }

  async [Symbol.asyncDispose](): Promise<void> {
    await this.stop();
  }

  /** A method, not a field test, so TypeScript does not narrow it across awaits. */
  #isStopping(): boolean {
    return this.#mode === "stopping";
  }

  #whenIdle(): Promise<void> {
    if (this.#inFlight === 0) return Promise.resolve();
    return new Promise((resolve) => this.#idleWaiters.push(resolve));
  }

  #settled(): void {
    this.#inFlight--;
    if (this.#inFlight > 0) return;
    const waiters = this.#idleWaiters;
    this.#idleWaiters = [];
    for (const w of waiters) w();
  }

  /** True once the lane should stop sending on `connection`; waits out a pause first. */
  async #shouldStop(connection: NbdClientConnection): Promise<boolean> {
    while (this.#mode === "paused" && this.#gate !== undefined) await this.#gate.promise;
    return this.#isStopping() || connection.closed;
  }

  #note(error: string): void {
    this.#errors.push(error);
    if (this.#errors.length > MAX_ERRORS) this.#errors.shift();
  }

  /** Runs connection `index` until stop() or until it cannot reconnect. */
  async #supervise(index: number, first: NbdClientConnection): Promise<void> {
    let connection: NbdClientConnection | undefined = first;
    while (connection !== undefined) {
      const session = this.ledger.openSession(index);
      this.#states[index] = { state: "open", uri: this.#uris[index] as string };
      const drive = new AbortController();
      this.#drives.add(drive);
      this.#live.add(connection);
      if (this.#isStopping()) drive.abort();
      connection.whenClosed.then(() => drive.abort());
      await this.#drive(index, connection, session, drive.signal);
      this.#drives.delete(drive);
      if (this.#isStopping()) await this.#finalFlush(connection, session);
      connection.close();
      await connection.whenClosed;
      this.#live.delete(connection);
      this.ledger.closeSession(session);
      connection = this.#isStopping() ? undefined : await this.#reconnect(index);
    }
    if (this.#states[index]?.state !== "failed") this.#states[index] = { state: "stopped" };
  }

  async #drive(index: number, connection: NbdClientConnection, session: number, signal: AbortSignal): Promise<void> {
    const lanes = Array.from({ length: this.#options.depth }, () => this.#lane(index, connection, session));
    await Promise.all([...lanes, this.#flusher(connection, session, signal)]);
  }

  #pickBlock(): number {
    const r = this.#options.random();
    const block = Math.min(this.#blocks - 1, Math.max(0, Math.floor(r * this.#blocks)));
    return (this.#options.regionOffsetBytes ?? 0) + block * BLOCK_BYTES;
  }

  /** One write at a time on `connection`, forever, until it closes or the writer stops. */
  async #lane(index: number, connection: NbdClientConnection, session: number): Promise<void> {
    // One buffer per lane: it is rewritten only after the previous write's reply, when the socket is done with it.
    const block = Buffer.allocUnsafe(BLOCK_BYTES);
    const fua = this.#options.fua === true;
    while (!(await this.#shouldStop(connection))) {
      const offsetBytes = this.#pickBlock();
      const write = this.ledger.recordSend(offsetBytes, index, session, fua);
      stampBlock(offsetBytes, write.seq, this.ledger.writerId, { sentAtMs: write.sentAtMs, into: block });
      this.#inFlight++;
      const result = await connection.write(offsetBytes, block, { fua });
      this.#settled();
      this.ledger.recordWriteReply(write, result);
      if (result === "closed") return;
      if (result !== 0) await sleep(REFUSED_WRITE_BACKOFF_MS);
    }
  }

  /** A FLUSH every flushEveryMs on `connection`, until it closes or the writer stops. */
  async #flusher(connection: NbdClientConnection, session: number, signal: AbortSignal): Promise<void> {
    const everyMs = this.#options.flushEveryMs;
    if (everyMs <= 0) return;
    for (;;) {
      await sleep(everyMs, undefined, { signal }).catch(() => undefined);
      if (await this.#shouldStop(connection)) return;
      if ((await this.#flushOnce(connection, session)) === "closed") return;
    }
  }

  async #flushOnce(connection: NbdClientConnection, session: number): Promise<number | "closed"> {
    const flush = this.ledger.recordFlushSend(session);
    this.#inFlight++;
    const result = await connection.flush();
    this.#settled();
    this.ledger.recordFlushReply(flush, result);
    return result;
  }

  /** On stop: one last flush on a live connection, so flushed mode covers the tail of the run. */
  async #finalFlush(connection: NbdClientConnection, session: number): Promise<void> {
    if (connection.closed || this.#options.flushEveryMs <= 0) return;
    await this.#flushOnce(connection, session);
  }

  /** A new connection for `index`, or undefined after stop() or MAX_RECONNECT_ATTEMPTS failures. */
  async #reconnect(index: number): Promise<NbdClientConnection | undefined> {
    let backoffMs = RECONNECT_BACKOFF_MIN_MS;
    let lastError: string | undefined;
    for (let attempt = 1; attempt <= MAX_RECONNECT_ATTEMPTS; attempt++) {
      if (this.#isStopping()) return undefined;
      this.#states[index] = { state: "reconnecting", attempt, lastError };
      try {
        const uri = await this.#reconnectUri(index);
        if (uri === undefined) return undefined;
        const connection = await LedgerWriter.#open(this.#options, uri);
        if (this.#isStopping()) {
          connection.close();
          return undefined;
        }
        this.#uris[index] = uri;
        this.#reconnects++;
        return connection;
      } catch (error) {
        lastError = messageOf(error);
        this.#note(`connection ${index}: reconnect attempt ${attempt} failed: ${lastError}`);
      }
      await sleep(backoffMs, undefined, { signal: this.#stopAbort.signal }).catch(() => undefined);
      backoffMs = Math.min(backoffMs * 2, RECONNECT_BACKOFF_MAX_MS);
    }
    const reason = `gave up after ${MAX_RECONNECT_ATTEMPTS} reconnect attempts; last: ${lastError}`;
    this.#states[index] = { state: "failed", reason };
    this.#note(`connection ${index}: ${reason}`);
    return undefined;
  }

  /** The caller's reconnect URI (or the previous one); undefined when stop() came first. */
  async #reconnectUri(index: number): Promise<string | undefined> {
    const reconnect = this.#options.reconnect;
    if (reconnect === undefined) return this.#uris[index];
    const signal = this.#stopAbort.signal;
    if (signal.aborted) return undefined;
    let onAbort: () => void = () => undefined;
    const stopped = new Promise<undefined>((resolve) => {
      onAbort = () => resolve(undefined);
      signal.addEventListener("abort", onAbort, { once: true });
    });
    try {
      return await Promise.race([reconnect(index), stopped]);
    } finally {
      signal.removeEventListener("abort", onAbort);
    }
  }
}
