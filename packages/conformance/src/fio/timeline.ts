// Turns fio's status objects into per-interval figures (for live samples) and
// a completed-IOs-per-second series lined up with the wall clock (for plots
// that must show a stall as zeros).
//
// What a status object means, from fio 3.33's stat.c and measured runs:
// - `runtime` (per direction) is taken when fio snapshots the status: ms since
//   the job's stats clock started. The clock restarts when ramp_time ends, and
//   counters restart with it; during ramp no latency samples are taken.
// - Before printing, fio waits for every job thread to hand over its rusage; a
//   thread blocked in I/O (a stalled target) holds the status back until the
//   I/O returns. So during a stall fio prints nothing, and the status it took
//   at the start of the stall is printed late, `timestamp_ms` being the print
//   time. Between a status's snapshot and its print the held-up job completed
//   nothing, which is what lets the series show the stall.
// - `total_ios` counts IOs when they are issued; `io_bytes` when they complete.
//   The series counts completions: io_bytes / block size.

/** Timeline points kept (one per status second: two days of statuses); later points are dropped. */
export const MAX_TIMELINE_POINTS = 2 * 86_400;

/** A status printed this long after its snapshot was held up by a job blocked in I/O. */
export const HELD_UP_MS = 100;

/** One fio status object (or the final report) as the timeline reads it. */
export interface StatusPoint {
  /** When fio printed it, wall-clock ms. */
  emittedAtMs: number;
  /** ms since fio's stats clock (re)started, at the snapshot; 0 while nothing has completed on this clock. */
  runtimeMs: number;
  /** IOs completed (read + write) since the clock (re)started. */
  completedIos: number;
  /** Completion-latency samples (read + write) and their sum in ns. */
  clatCount: number;
  clatSumNs: number;
}

/** Figures of the interval a status closes. */
export interface IntervalFigures {
  /** Completed IOs per second over the interval. */
  iops: number;
  /** Mean completion latency of the IOs completed in the interval; 0 when none completed. */
  latencyUs: number;
}

interface StoredPoint extends StatusPoint {
  /** Which run of fio's stats clock the point belongs to; -1 for points before any completion on it. */
  epoch: number;
}

/** The statuses of one fio run, in the order fio printed them. */
export class IoTimeline {
  private readonly points: StoredPoint[] = [];
  /** Per epoch, the earliest estimate of when its clock started (print time - runtime; prints are never early). */
  private readonly epochStartMs: number[] = [];
  /** The last point that showed I/O on its clock. */
  private lastIo: StoredPoint | undefined;

  /** @param startedAtMs wall-clock ms at which second 0 of the series starts (fio's spawn). */
  constructor(private readonly startedAtMs: number) {}

  /** Adds the next status; returns the figures of the interval since the previous one. */
  add(point: StatusPoint): IntervalFigures {
    const previous = this.points.at(-1);
    const lastIo = this.lastIo;
    if (point.runtimeMs <= 0) {
      this.store({ ...point, epoch: -1 });
      return { iops: 0, latencyUs: 0 };
    }
    const newEpoch =
      lastIo === undefined ||
      previous?.epoch === -1 ||
      point.runtimeMs < lastIo.runtimeMs ||
      point.completedIos < lastIo.completedIos ||
      // Ramp ends: the first latency samples appear on a clock that had only ramp I/O so far.
      (lastIo.clatCount === 0 && lastIo.completedIos > 0 && point.clatCount > 0);
    const epoch = newEpoch ? this.epochStartMs.length : lastIo.epoch;
    const startMs = point.emittedAtMs - point.runtimeMs;
    this.epochStartMs[epoch] = Math.min(this.epochStartMs[epoch] ?? startMs, startMs);
    this.lastIo = { ...point, epoch };
    this.store(this.lastIo);
    if (newEpoch || previous === undefined) {
      return figures(point.completedIos, point.runtimeMs, point.clatCount, point.clatSumNs);
    }
    return figures(
      point.completedIos - previous.completedIos,
      point.emittedAtMs - previous.emittedAtMs,
      point.clatCount - previous.clatCount,
      point.clatSumNs - previous.clatSumNs,
    );
  }

  /** Wall-clock ms when I/O first started, once a status has shown some. */
  ioStartedAtMs(): number | undefined {
    return this.epochStartMs[0];
  }

  /**
   * Completed IOs in each whole second after `startedAtMs` up to the last
   * status (a last, partial second is left out). Seconds before the first I/O
   * (connecting, laying out a file) and seconds of a stall are 0.
   */
  perSecond(): number[] {
    const last = this.points.at(-1);
    if (last === undefined) return [];
    const buckets = new Array<number>(Math.max(0, Math.floor((last.emittedAtMs - this.startedAtMs) / 1000))).fill(0);
    let previousEmittedMs = this.startedAtMs;
    let previousIos = 0;
    let previousEpoch = -1;
    let hadIo = false;
    /** Completions per ms of the last interval that was not held up. */
    let ratePerMs = 0;
    for (const p of this.points) {
      if (p.epoch >= 0) {
        const clockStartMs = this.epochStartMs[p.epoch] ?? p.emittedAtMs - p.runtimeMs;
        const snapshotMs = clockStartMs + p.runtimeMs;
        if (p.epoch === previousEpoch) {
          // Completions since the last print happened before this snapshot; none between snapshot and print.
          const ios = p.completedIos - previousIos;
          let endMs = snapshotMs;
          if (p.emittedAtMs - snapshotMs > HELD_UP_MS && ratePerMs > 0) {
            // Held up: the I/O stopped somewhere before the snapshot. Assume it ran at the rate it had
            // until it stopped, rather than spreading its last completions over the start of the stall.
            endMs = Math.min(snapshotMs, previousEmittedMs + ios / ratePerMs);
          } else if (snapshotMs > previousEmittedMs) {
            ratePerMs = ios / (snapshotMs - previousEmittedMs);
          }
          this.spread(buckets, previousEmittedMs, endMs, ios);
        } else {
          ratePerMs = p.completedIos / p.runtimeMs;
          this.spread(buckets, clockStartMs, snapshotMs, p.completedIos);
          // The clock restarted (ramp ended): what completed between the last print and the restart was
          // not reported; it is estimated at the rate measured right after the restart.
          if (hadIo && clockStartMs > previousEmittedMs) {
            this.spread(buckets, previousEmittedMs, clockStartMs, ratePerMs * (clockStartMs - previousEmittedMs));
          }
        }
        previousIos = p.completedIos;
        previousEpoch = p.epoch;
        hadIo = true;
      }
      previousEmittedMs = p.emittedAtMs;
    }
    return buckets.map((n) => Math.round(n));
  }

  private store(point: StoredPoint): void {
    if (this.points.length < MAX_TIMELINE_POINTS) this.points.push(point);
  }

  /** Adds `count` IOs spread evenly over [fromMs, toMs) to the second buckets they overlap. */
  private spread(buckets: number[], fromMs: number, toMs: number, count: number): void {
    if (count <= 0) return;
    const from = (fromMs - this.startedAtMs) / 1000;
    const to = (toMs - this.startedAtMs) / 1000;
    if (to <= from) {
      addTo(buckets, Math.floor(from), count);
      return;
    }
    for (let second = Math.max(0, Math.floor(from)); second < Math.min(buckets.length, Math.ceil(to)); second++) {
      const overlap = Math.min(to, second + 1) - Math.max(from, second);
      if (overlap > 0) addTo(buckets, second, (count * overlap) / (to - from));
    }
  }
}

function addTo(buckets: number[], second: number, count: number): void {
  if (second >= 0 && second < buckets.length) buckets[second] = (buckets[second] ?? 0) + count;
}

function figures(ios: number, spanMs: number, clatCount: number, clatSumNs: number): IntervalFigures {
  return {
    iops: spanMs > 0 && ios > 0 ? (ios * 1000) / spanMs : 0,
    latencyUs: clatCount > 0 ? clatSumNs / clatCount / 1000 : 0,
  };
}
