// The HA checks' load: the ledger writer over several connections whose
// ranges overlap, re-pointed at the new node after a failover, and verified
// at the end by reading the volume back.

import { ConformanceError } from "../../errors.js";
import { type Ledger, LedgerWriter, type VerifyResult, verifyLedger } from "../../ledger/index.js";
import { nbdReader, openNbd } from "../../nbd/index.js";
import type { TimeSeries } from "../../report/types.js";
import type { CheckContext } from "../check.js";
import { seededRandom } from "../random.js";
import { HA_VOLUME_BYTES } from "./common.js";

/** Connections of the writer; their block choices overlap over the whole volume. */
const CONNECTIONS = 4;
/** Writes in flight per connection. */
const DEPTH = 8;
const FLUSH_EVERY_MS = 200;
/** A write unanswered this long gives its connection up (then it reconnects): above any failover we accept. */
const REQUEST_TIMEOUT_MS = 60_000;
const SAMPLE_EVERY_MS = 1_000;

export interface HaLoad {
  /**
   * Moves the writer to a new attachment, as a failing-over application
   * does: its connections to the old one are closed and reopened on `uri`,
   * and the ledger is fenced (nothing sent to the old one may land later).
   */
  switchTo(uri: string): Promise<void>;
  /** The writer's ledger, to verify it against another writer's blocks. */
  readonly ledger: Ledger;
  currentUri(): string;
  /** Resolves with the wall-clock ms of the first write acknowledged on a connection opened after `atMs`. */
  waitFirstAckAfter(atMs: number, timeoutMs: number): Promise<number>;
  /** Longest time between two acknowledged writes within [fromMs, toMs] (1 s resolution at worst, 1 ms at best). */
  maxAckGapMs(fromMs: number, toMs: number): number;
  stats(): { sent: number; acked: number; failed: number; flushesAcked: number };
  pause(): Promise<void>;
  resume(): void;
  stop(): Promise<void>;
  /**
   * Reads the whole volume through `uri` and checks every acknowledged write
   * (after stop()); `only` limits it to the blocks it accepts.
   */
  verify(uri: string, only?: (offsetBytes: number) => boolean): Promise<VerifyResult>;
  /** The per-second acknowledged writes since the start. */
  ackSeries(): { startedAtMs: number; intervalMs: number; points: number[] };
}

/** Starts the ledger writer on `uri`; `reconnect: false` keeps dead connections on the same URI. */
export async function startHaLoad(ctx: CheckContext, uri: string, options: { reconnect?: boolean } = {}): Promise<HaLoad> {
  let current = uri;
  /** Resolved by switchTo(): connections that lost the old URI wait here for the new one. */
  let next: { promise: Promise<string>; resolve: (uri: string) => void } | null = null;
  const waitForNew = (had: string): Promise<string> => {
    if (current !== had) return Promise.resolve(current);
    if (!next) {
      let resolve: (u: string) => void = () => undefined;
      const promise = new Promise<string>((r) => {
        resolve = r;
      });
      next = { promise, resolve };
    }
    return next.promise;
  };
  const lastUri: string[] = Array.from({ length: CONNECTIONS }, () => uri);
  const writer = await LedgerWriter.start({
    uris: Array.from({ length: CONNECTIONS }, () => uri),
    regionBytes: HA_VOLUME_BYTES,
    connections: CONNECTIONS,
    depth: DEPTH,
    flushEveryMs: FLUSH_EVERY_MS,
    // The writer's block picks get their own stream: the check's draws must not depend on how many writes ran.
    random: seededRandom(Math.floor(ctx.random() * 2 ** 31)),
    requestTimeoutMs: REQUEST_TIMEOUT_MS,
    ...(options.reconnect === false
      ? {}
      : {
          reconnect: async (index: number) => {
            const had = lastUri[index] as string;
            const got = current !== had ? current : await waitForNew(had);
            lastUri[index] = got;
            return got;
          },
        }),
  });
  let stopped = false;
  let lastAcked = 0;
  let lastAt = Date.now();
  const sampler = setInterval(() => {
    const acked = writer.counts().writesAcked;
    const now = Date.now();
    ctx.progress.sample({
      phase: "ledger writer",
      iops: ((acked - lastAcked) * 1000) / Math.max(1, now - lastAt),
      latencyUs: 0,
      elapsedS: (now - writer.ledger.startedAtMs) / 1000,
    });
    lastAcked = acked;
    lastAt = now;
  }, SAMPLE_EVERY_MS);
  const onAbort = () => void stop();
  const stop = async () => {
    if (stopped) return;
    stopped = true;
    clearInterval(sampler);
    ctx.signal.removeEventListener("abort", onAbort);
    await writer.stop();
  };
  ctx.signal.addEventListener("abort", onAbort, { once: true });
  return {
    async switchTo(u) {
      current = u;
      const waiting = next;
      next = null;
      waiting?.resolve(u);
      await writer.redirect();
    },
    ledger: writer.ledger,
    currentUri: () => current,
    async waitFirstAckAfter(atMs, timeoutMs) {
      const deadline = Date.now() + timeoutMs;
      while (Date.now() < deadline && !ctx.signal.aborted) {
        const t = writer.firstAckAfter(atMs, { onNewConnection: true });
        if (t !== undefined) return t;
        await new Promise((r) => setTimeout(r, 5));
      }
      throw new ConformanceError({
        code: "TARGET_FAILED",
        message: `no write acknowledged within ${timeoutMs} ms after the fault; writer: ${writer.errors.slice(-3).join("; ")}`,
      });
    },
    maxAckGapMs(fromMs, toMs) {
      let gap = 0;
      let prev = writer.firstAckAfter(fromMs);
      if (prev === undefined) return toMs - fromMs;
      while (prev < toMs) {
        const nextAck = writer.firstAckAfter(prev + 1);
        const end = nextAck === undefined ? toMs : Math.min(nextAck, toMs);
        gap = Math.max(gap, end - prev);
        if (nextAck === undefined) break;
        prev = nextAck;
      }
      return gap;
    },
    stats() {
      const c = writer.counts();
      return { sent: c.writesSent, acked: c.writesAcked, failed: c.writesFailed, flushesAcked: c.flushesAcked };
    },
    pause: () => writer.pause(),
    resume: () => writer.resume(),
    stop,
    async verify(readUri, only) {
      await stop();
      await using c = await openNbd(readUri, { timeoutMs: 30_000 });
      try {
        return await verifyLedger(writer.ledger, nbdReader(c, readUri), { mode: "acknowledged", ...(only ? { only } : {}) });
      } catch (error) {
        if (c.closeReason === undefined) throw error;
        throw new ConformanceError({
          code: "TARGET_FAILED",
          message: `${(error as Error).message} (${c.closeReason})`,
          cause: error,
        });
      }
    },
    ackSeries: () => writer.ackedPerSecond(),
  };
}

/** The acknowledged writes per second as a report series, with the check's marks. */
export function ackSeries(load: HaLoad, marks: TimeSeries["marks"]): TimeSeries {
  const all = load.ackSeries();
  // The last second is cut short by the writer's stop: it would read as a drop that never happened.
  const s = { ...all, points: all.points.slice(0, -1) };
  const rel = marks.map((m) => ({ ...m, atMs: Math.max(0, m.atMs - s.startedAtMs) }));
  const stalls: TimeSeries["stalls"] = [];
  // A second with no acknowledged write between faults and recovery is a stall.
  for (let i = 0; i < s.points.length; i++) {
    if (s.points[i] !== 0) continue;
    const last = stalls.at(-1);
    if (last && last.toMs === i * s.intervalMs) last.toMs = (i + 1) * s.intervalMs;
    else stalls.push({ fromMs: i * s.intervalMs, toMs: (i + 1) * s.intervalMs });
  }
  return { name: "acknowledged writes per second", unit: "IOPS", intervalMs: s.intervalMs, points: s.points, marks: rel, stalls };
}
