// The exact history of every chunk written under load, and the rule a
// snapshot taken during that load is judged by.
//
// Each chunk is written by one lane only, one write at a time, so its
// versions are totally ordered and each write's send and acknowledgement
// times are known. A snapshot whose call started at S and returned at R must
// hold, per chunk, a version v with
//   v >= the last version acknowledged before S   (no acknowledged write lost)
//   v <= the last version sent before R           (nothing sent after the call)
// and the whole of v (not torn). Times are taken on the suite's side: a send
// is stamped before the request leaves and an acknowledgement after it came
// back, S before the call and R after it, so the window allowed is never
// narrower than the true one: a violation found is a real one.

import { formatContent, type UnitContent } from "./stamp.js";

/** One write of a chunk. */
export interface WriteRecord {
  version: number;
  /** The ledger's clock just before the request was handed to the connection. */
  sentAtMs: number;
  /** `performance.now()` once the acknowledgement was seen; Infinity until then, and for a failed write. */
  ackedAtMs: number;
}

/** What a chunk may hold in one snapshot. */
export interface ChunkWindow {
  /** Last version acknowledged before the call started. */
  min: number;
  /** Last version sent before the call returned. */
  max: number;
}

/** Every write of every chunk of the region, in order. */
export class WriteLedger {
  /** `history[chunk]` in version order; version i is at index i. */
  readonly #history: WriteRecord[][];
  /** Writes acknowledged so far. */
  acked = 0;
  /** Writes that failed; the first failure's words are kept. */
  failed = 0;
  firstFailure: string | undefined;
  /** The clock sends, acknowledgements and snapshot calls are timed by (injected by tests). */
  readonly now: () => number;

  constructor(chunks: number, now: () => number = () => performance.now()) {
    this.#history = Array.from({ length: chunks }, () => []);
    this.now = now;
  }

  get chunks(): number {
    return this.#history.length;
  }

  /** The version the next write of `chunk` gets. */
  nextVersion(chunk: number): number {
    return this.#history[chunk]!.length;
  }

  /** Records a write of `chunk` about to be sent; resolve it with {@link settle}. Returns its version. */
  begin(chunk: number): WriteRecord {
    const h = this.#history[chunk]!;
    const record = { version: h.length, sentAtMs: this.now(), ackedAtMs: Number.POSITIVE_INFINITY };
    h.push(record);
    return record;
  }

  settle(record: WriteRecord, error: string | undefined): void {
    if (error === undefined) {
      record.ackedAtMs = this.now();
      this.acked++;
      return;
    }
    this.failed++;
    this.firstFailure ??= error;
  }

  /** The versions `chunk` may hold in a snapshot whose call ran from `startMs` to `endMs`. */
  window(chunk: number, startMs: number, endMs: number): ChunkWindow {
    const h = this.#history[chunk]!;
    let min = -1;
    let max = -1;
    for (const w of h) {
      if (w.ackedAtMs < startMs) min = w.version;
      if (w.sentAtMs < endMs) max = w.version;
    }
    return { min, max };
  }

  record(chunk: number, version: number): WriteRecord | undefined {
    return this.#history[chunk]?.[version];
  }
}

/**
 * Judges what `chunk` holds in a snapshot whose call ran from `startMs` to
 * `endMs`: undefined when right, else a sentence with what was expected and found.
 */
export function judgeChunk(
  ledger: WriteLedger,
  stream: number,
  chunk: number,
  found: UnitContent,
  startMs: number,
  endMs: number,
): string | undefined {
  const w = ledger.window(chunk, startMs, endMs);
  const expected =
    w.min === w.max
      ? `v${w.min} (acknowledged before the call started)`
      : `v${w.min}..v${w.max} (v${w.min} acknowledged before the call started, v${w.max} the last sent before it returned)`;
  if (found.kind !== "stamp" || found.stamp.stream !== stream || found.stamp.unit !== chunk) {
    return `chunk ${chunk}: expected ${expected}, found ${formatContent(found)}`;
  }
  const v = found.stamp.version;
  if (v >= w.min && v <= w.max) return undefined;
  const record = ledger.record(chunk, v);
  if (record === undefined) return `chunk ${chunk}: expected ${expected}, found v${v}, which was never written`;
  if (v < w.min) {
    return `chunk ${chunk}: expected ${expected}, found older v${v}: an acknowledged write is missing from the snapshot`;
  }
  const afterMs = Math.round(record.sentAtMs - endMs);
  return `chunk ${chunk}: expected ${expected}, found v${v}, sent ${afterMs} ms after the call returned`;
}
