// What the writer sent and what the storage acknowledged, on one logical
// clock. The clock ticks on every send and every reply the writer sees, so
// "X was sent after C's acknowledgement was received" is `X.sendTick >
// C.ackTick`, exactly as the client observed it (JS runs one event at a time).
//
// Per block it keeps only what verification can still need: the last
// acknowledged write, the last covered (flushed or FUA) write, and the writes
// that could still legally be the block's content in either mode, that is
// every write not acknowledged before the last covered write was sent.

import assert from "node:assert/strict";
import type { NbdReplyError } from "../nbd/types.js";
import { BLOCK_BYTES } from "./block.js";
import { type AckSeries, AckTimeline } from "./timeline.js";

/** Writes the ledger retains before it gives up the flush history (then prunes to acknowledged-mode needs). */
export const MAX_RETAINED_WRITES = 2_000_000;
/** Connection sessions remembered for firstAckAfter(..., { onNewConnection }); the oldest closed ones go first. */
export const MAX_SESSIONS = 10_000;

/** How a write ended, as far as the writer knows. */
export type WriteOutcome =
  | { state: "in-flight" }
  | {
      state: "acked";
      /** Logical time the acknowledgement was received. */
      ackTick: number;
      ackedAtMs: number;
      /** When an acknowledged flush (or FUA) made it durable; undefined until then. */
      coveredAtMs: number | undefined;
    }
  | { state: "refused"; errno: number }
  /** The connection died first: the write may or may not have happened, at any later time. */
  | { state: "unknown" };

/** One write as the ledger remembers it. */
export interface WriteRecord {
  readonly seq: number;
  readonly offsetBytes: number;
  readonly connection: number;
  readonly session: number;
  readonly fua: boolean;
  /** Logical time the write was handed to the connection. */
  readonly sendTick: number;
  readonly sentAtMs: number;
  outcome: WriteOutcome;
}

/** What one block's verification needs. */
export interface BlockHistory {
  /** Writes that may still be the block's content in some mode, in send order. */
  writes: WriteRecord[];
  /** The acknowledged write sent last: acknowledged mode requires it or a write not acknowledged before it was sent. */
  lastAcked: WriteRecord | undefined;
  /** The covered write sent last: the same requirement in flushed mode. */
  lastCovered: WriteRecord | undefined;
}

/** A flush as sent, to be completed by {@link Ledger.recordFlushReply}. */
export interface FlushRecord {
  readonly session: number;
  readonly sendTick: number;
  readonly sentAtMs: number;
}

/** Running totals. */
export interface LedgerCounts {
  writesSent: number;
  writesAcked: number;
  /** Refused by the server (an NBD error reply). */
  writesRefused: number;
  /** The connection died before the reply. */
  writesUnknown: number;
  /** writesRefused + writesUnknown. */
  writesFailed: number;
  flushesSent: number;
  flushesAcked: number;
  flushesFailed: number;
  /** Connections opened, the first ones included. */
  sessions: number;
}

interface Session {
  readonly connection: number;
  readonly openedAtMs: number;
  firstAckAtMs: number | undefined;
  open: boolean;
  /** Acknowledged writes not yet covered, in ack order (so ackTick ascends); consumed from `head`. */
  uncovered: WriteRecord[];
  head: number;
}

/** Fences one ledger records; one per failover, so a run never comes near it. */
export const MAX_FENCES = 100_000;

/** The tick at which a write's acknowledgement arrived; Infinity when it never did (it may land any time). */
export function ackTickOf(write: WriteRecord): number {
  return write.outcome.state === "acked" ? write.outcome.ackTick : Number.POSITIVE_INFINITY;
}

export class Ledger {
  readonly writerId: number;
  readonly regionOffsetBytes: number;
  readonly regionBytes: number;
  readonly startedAtMs: number;
  readonly #now: () => number;
  readonly #maxRetainedWrites: number;
  readonly #timeline: AckTimeline;
  readonly #counts: LedgerCounts = {
    writesSent: 0,
    writesAcked: 0,
    writesRefused: 0,
    writesUnknown: 0,
    writesFailed: 0,
    flushesSent: 0,
    flushesAcked: 0,
    flushesFailed: 0,
    sessions: 0,
  };
  /** Block histories by block offset; only blocks written at least once. */
  readonly #blocks = new Map<number, BlockHistory>();
  readonly #sessions = new Map<number, Session>();
  /** The logical clock. */
  #tick = 0;
  #lastSeq = 0;
  /** Write records held in all block histories. */
  #retained = 0;
  /**
   * Ticks at which the writer's old attachment was fenced (a failover), in
   * ascending order: a write that was sent before a fence and never
   * acknowledged can land no later than that fence.
   */
  readonly #fences: number[] = [];
  /** Why flushed-mode verification is impossible, once the flush history had to be dropped. */
  #flushHistoryDropped: string | undefined;

  constructor(options: {
    writerId: number;
    regionOffsetBytes: number;
    regionBytes: number;
    /** Wall clock in ms. */
    now: () => number;
    /** Default MAX_RETAINED_WRITES; tests lower it. */
    maxRetainedWrites?: number;
  }) {
    assert.ok(
      options.regionOffsetBytes % BLOCK_BYTES === 0 && options.regionBytes % BLOCK_BYTES === 0,
      "region is not block-aligned",
    );
    assert.ok(options.regionBytes > 0, "region is empty");
    this.writerId = options.writerId;
    this.regionOffsetBytes = options.regionOffsetBytes;
    this.regionBytes = options.regionBytes;
    this.#now = options.now;
    this.#maxRetainedWrites = options.maxRetainedWrites ?? MAX_RETAINED_WRITES;
    this.startedAtMs = options.now();
    this.#timeline = new AckTimeline(this.startedAtMs);
  }

  /** Highest seq issued; no block of this writer may carry a larger one. */
  get lastSeq(): number {
    return this.#lastSeq;
  }

  get retainedWrites(): number {
    return this.#retained;
  }

  /** Undefined while flushed-mode verification is possible; else why not. */
  get flushHistoryDropped(): string | undefined {
    return this.#flushHistoryDropped;
  }

  counts(): LedgerCounts {
    return { ...this.#counts };
  }

  /** The block at `offsetBytes`, or undefined when this writer never wrote it. */
  history(offsetBytes: number): Readonly<BlockHistory> | undefined {
    return this.#blocks.get(offsetBytes);
  }

  /** Starts a connection session; returns its id. */
  openSession(connection: number): number {
    const id = ++this.#counts.sessions;
    this.#sessions.set(id, { connection, openedAtMs: this.#now(), firstAckAtMs: undefined, open: true, uncovered: [], head: 0 });
    if (this.#sessions.size > MAX_SESSIONS) {
      for (const [oldId, s] of this.#sessions) {
        if (!s.open) {
          this.#sessions.delete(oldId);
          break;
        }
      }
    }
    return id;
  }

  /** Ends a session: its uncovered writes can no longer be covered by its flushes. */
  closeSession(session: number): void {
    const s = this.#sessions.get(session);
    if (s === undefined) return;
    s.open = false;
    s.uncovered = [];
    s.head = 0;
  }

  /** Records a write about to be sent and assigns its seq. */
  recordSend(offsetBytes: number, connection: number, session: number, fua: boolean): WriteRecord {
    assert.ok(
      offsetBytes >= this.regionOffsetBytes &&
        offsetBytes < this.regionOffsetBytes + this.regionBytes &&
        offsetBytes % BLOCK_BYTES === 0,
      `write offset ${offsetBytes} is not a block of the region`,
    );
    const write: WriteRecord = {
      seq: ++this.#lastSeq,
      offsetBytes,
      connection,
      session,
      fua,
      sendTick: ++this.#tick,
      sentAtMs: this.#now(),
      outcome: { state: "in-flight" },
    };
    let history = this.#blocks.get(offsetBytes);
    if (history === undefined) {
      history = { writes: [], lastAcked: undefined, lastCovered: undefined };
      this.#blocks.set(offsetBytes, history);
    }
    history.writes.push(write);
    this.#retained++;
    this.#counts.writesSent++;
    if (this.#retained > this.#maxRetainedWrites && this.#flushHistoryDropped === undefined) {
      this.#dropFlushHistory(`more than ${this.#maxRetainedWrites} writes awaited a flush`);
    }
    return write;
  }

  /** Records the reply to a write: 0 acknowledged, an NBD error refused, "closed" unknown. */
  recordWriteReply(write: WriteRecord, result: NbdReplyError): void {
    assert.equal(write.outcome.state, "in-flight", `write seq ${write.seq} already has an outcome`);
    if (result === "closed") {
      write.outcome = { state: "unknown" };
      this.#counts.writesUnknown++;
      this.#counts.writesFailed++;
      return;
    }
    if (result !== 0) {
      write.outcome = { state: "refused", errno: result };
      this.#counts.writesRefused++;
      this.#counts.writesFailed++;
      return;
    }
    const atMs = this.#now();
    write.outcome = { state: "acked", ackTick: ++this.#tick, ackedAtMs: atMs, coveredAtMs: undefined };
    this.#counts.writesAcked++;
    this.#timeline.record(atMs);
    const session = this.#sessions.get(write.session);
    if (session !== undefined) session.firstAckAtMs ??= atMs;
    const history = this.#blocks.get(write.offsetBytes) as BlockHistory;
    const lastAcked = history.lastAcked === undefined || write.sendTick > history.lastAcked.sendTick ? write : history.lastAcked;
    history.lastAcked = lastAcked;
    if (this.#flushHistoryDropped !== undefined) {
      this.#prune(history, lastAcked.sendTick);
    } else if (write.fua) {
      // A FUA write is durable when acknowledged: it covers itself.
      this.#cover(write, atMs);
    } else if (session?.open) {
      session.uncovered.push(write);
    }
  }

  recordFlushSend(session: number): FlushRecord {
    this.#counts.flushesSent++;
    return { session, sendTick: ++this.#tick, sentAtMs: this.#now() };
  }

  /**
   * Records that every write sent so far can land no later than now: the
   * caller took the volume over elsewhere and the old attachment is fenced.
   * Without it, a write left without a reply would be a legal block content
   * forever, and a stale write from the old node landing over a newer
   * acknowledged one would pass verification.
   */
  fence(): void {
    assert.ok(this.#fences.length < MAX_FENCES, `more than ${MAX_FENCES} fences`);
    this.#fences.push(++this.#tick);
  }

  /**
   * The tick by which `write` had landed or never will: its acknowledgement,
   * else the first fence after it was sent, else Infinity.
   */
  settledTickOf(write: WriteRecord): number {
    if (write.outcome.state === "acked") return write.outcome.ackTick;
    const fences = this.#fences;
    let lo = 0;
    let hi = fences.length;
    while (lo < hi) {
      const mid = (lo + hi) >>> 1;
      if ((fences[mid] as number) > write.sendTick) hi = mid;
      else lo = mid + 1;
    }
    return lo < fences.length ? (fences[lo] as number) : Number.POSITIVE_INFINITY;
  }

  /**
   * Records a flush's reply. An acknowledged flush covers the writes of its
   * session whose acknowledgement arrived before it was sent (NBD only
   * promises that much; other connections' writes need their own flush).
   */
  recordFlushReply(flush: FlushRecord, result: NbdReplyError): void {
    if (result !== 0) {
      this.#counts.flushesFailed++;
      return;
    }
    this.#counts.flushesAcked++;
    this.#tick++;
    const session = this.#sessions.get(flush.session);
    if (session === undefined || !session.open) return;
    const atMs = this.#now();
    while (session.head < session.uncovered.length) {
      const write = session.uncovered[session.head] as WriteRecord;
      if (ackTickOf(write) > flush.sendTick) break;
      this.#cover(write, atMs);
      session.head++;
    }
    // Compact the consumed front now and then, so the queue stays proportional to uncovered writes.
    if (session.head > 1024 && session.head * 2 > session.uncovered.length) {
      session.uncovered = session.uncovered.slice(session.head);
      session.head = 0;
    }
  }

  /**
   * Wall-clock ms of the first acknowledged write at or after `atMs` (1 ms
   * resolution), or undefined. With `onNewConnection`, only acks on
   * connections opened at or after `atMs` count (the first write the new
   * node acknowledged after a re-attach, not a late ack from the old one).
   */
  firstAckAfter(atMs: number, options: { onNewConnection?: boolean } = {}): number | undefined {
    if (!options.onNewConnection) return this.#timeline.firstAtOrAfter(atMs);
    let first: number | undefined;
    for (const s of this.#sessions.values()) {
      if (s.openedAtMs >= atMs && s.firstAckAtMs !== undefined && (first === undefined || s.firstAckAtMs < first))
        first = s.firstAckAtMs;
    }
    return first;
  }

  /** Acknowledged writes per second since the ledger started. */
  ackedPerSecond(): AckSeries {
    return this.#timeline.perSecond();
  }

  #cover(write: WriteRecord, atMs: number): void {
    if (write.outcome.state !== "acked") return;
    write.outcome.coveredAtMs = atMs;
    const history = this.#blocks.get(write.offsetBytes) as BlockHistory;
    if (history.lastCovered !== undefined && write.sendTick < history.lastCovered.sendTick) return;
    history.lastCovered = write;
    this.#prune(history, write.sendTick);
  }

  /** Drops writes acknowledged before `boundaryTick`: no mode can accept them once a required write was sent then. */
  #prune(history: BlockHistory, boundaryTick: number): void {
    const before = history.writes.length;
    history.writes = history.writes.filter((w) => ackTickOf(w) > boundaryTick);
    this.#retained -= before - history.writes.length;
  }

  #dropFlushHistory(reason: string): void {
    this.#flushHistoryDropped = reason;
    for (const s of this.#sessions.values()) {
      s.uncovered = [];
      s.head = 0;
    }
    for (const history of this.#blocks.values()) {
      if (history.lastAcked !== undefined) this.#prune(history, history.lastAcked.sendTick);
    }
  }
}
