// When acknowledgements arrived: a one-bit-per-millisecond map (to find the
// first ack after a fault at 1 ms resolution) and per-second counts (the
// failover IOPS plot). Both grow with the run and stop at MAX_TIMELINE_MS.

import assert from "node:assert/strict";

/** Longest run the timeline records (24 h: a 10.8 MB bitmap at most); acks later than that are only counted. */
export const MAX_TIMELINE_MS = 24 * 60 * 60 * 1000;
const INITIAL_MS = 64 * 1024;

/** Acknowledged writes per interval since the ledger started. */
export interface AckSeries {
  /** Wall-clock ms (the ledger's clock) where `points[0]` begins. */
  startedAtMs: number;
  intervalMs: number;
  /** `points[i]` counts acks in `[startedAtMs + i * intervalMs, startedAtMs + (i + 1) * intervalMs)`. */
  points: number[];
}

export class AckTimeline {
  readonly startedAtMs: number;
  /** Bit `t` is set when an ack arrived in millisecond `t` after the start. */
  #bits = new Uint8Array(INITIAL_MS / 8);
  /** Acks per second after the start. */
  #perSecond = new Uint32Array(Math.ceil(INITIAL_MS / 1000));
  /** Highest millisecond slot recorded, -1 before the first ack. */
  #lastSlot = -1;
  /** Acks past MAX_TIMELINE_MS (or before the start), counted but not placed. */
  #outside = 0;

  constructor(startedAtMs: number) {
    this.startedAtMs = startedAtMs;
  }

  get acksOutside(): number {
    return this.#outside;
  }

  record(atMs: number): void {
    const slot = Math.floor(atMs - this.startedAtMs);
    if (!(slot >= 0 && slot < MAX_TIMELINE_MS)) {
      this.#outside++;
      return;
    }
    this.#grow(slot);
    (this.#bits[slot >>> 3] as number) |= 1 << (slot & 7);
    (this.#perSecond[Math.floor(slot / 1000)] as number)++;
    if (slot > this.#lastSlot) this.#lastSlot = slot;
  }

  /** Wall-clock ms of the first ack at or after `atMs` (1 ms resolution); undefined when none came. */
  firstAtOrAfter(atMs: number): number | undefined {
    let slot = Math.max(0, Math.floor(atMs - this.startedAtMs));
    while (slot <= this.#lastSlot) {
      const byte = this.#bits[slot >>> 3] as number;
      // Whole empty bytes are skipped eight slots at a time.
      if (byte === 0) {
        slot = (slot | 7) + 1;
        continue;
      }
      if ((byte & (1 << (slot & 7))) !== 0) return Math.max(atMs, this.startedAtMs + slot);
      slot++;
    }
    return undefined;
  }

  /** Per-second counts from the start to the last ack. */
  perSecond(): AckSeries {
    const seconds = this.#lastSlot < 0 ? 0 : Math.floor(this.#lastSlot / 1000) + 1;
    return { startedAtMs: this.startedAtMs, intervalMs: 1000, points: Array.from(this.#perSecond.subarray(0, seconds)) };
  }

  #grow(slot: number): void {
    if (slot < this.#bits.length * 8) return;
    let ms = this.#bits.length * 8;
    while (ms <= slot) ms *= 2;
    ms = Math.min(Math.ceil(MAX_TIMELINE_MS / 8) * 8, ms);
    assert.ok(slot < ms, `slot ${slot} beyond the timeline`);
    const bits = new Uint8Array(ms / 8);
    bits.set(this.#bits);
    this.#bits = bits;
    const perSecond = new Uint32Array(Math.ceil(ms / 1000));
    perSecond.set(this.#perSecond);
    this.#perSecond = perSecond;
  }
}
