/** Upper bounds (seconds) of the request latency buckets: 50 µs to 10 s, as block storage spans them. */
export const LATENCY_BUCKETS_S: readonly number[] = [
  50e-6, 100e-6, 250e-6, 500e-6, 1e-3, 2.5e-3, 5e-3, 10e-3, 25e-3, 50e-3, 100e-3, 250e-3, 1, 2.5, 10,
];

/**
 * A latency histogram with fixed buckets, kept as plain numbers: observing
 * costs a short scan and two adds, no allocation (it runs once per request).
 * `counts[i]` counts observations in bucket i alone (not cumulative); the last
 * slot counts those past the largest bound.
 */
export class LatencyHistogram {
  readonly counts = new Float64Array(LATENCY_BUCKETS_S.length + 1);
  sumSeconds = 0;
  count = 0;

  observe(seconds: number): void {
    let i = 0;
    while (i < LATENCY_BUCKETS_S.length && seconds > (LATENCY_BUCKETS_S[i] as number)) i++;
    this.counts[i] = (this.counts[i] as number) + 1;
    this.sumSeconds += seconds;
    this.count++;
  }
}

/**
 * What clients asked of one volume or snapshot through its exports, counted
 * as requests arrive, and how long the ones the export ran took (plain number
 * fields: the request path pays a few adds, no allocation). Served from
 * memory, reset when the daemon starts; /metrics shows them.
 */
export class IoCounters {
  /** READ requests and the bytes they asked for. */
  readOps = 0;
  readBytes = 0;
  /** WRITE requests and their payload bytes. */
  writeOps = 0;
  writeBytes = 0;
  /** WRITE_ZEROES and TRIM requests. */
  zeroOps = 0;
  flushOps = 0;
  /** BLOCK_STATUS queries (answered from metadata, no disk I/O). */
  blockStatusOps = 0;
  /** Time from a request's arrival to its completion, per kind (whether it succeeded or failed). */
  readonly readLatency = new LatencyHistogram();
  readonly writeLatency = new LatencyHistogram();
  readonly zeroLatency = new LatencyHistogram();
  readonly flushLatency = new LatencyHistogram();

  /** Reads, writes, zeroes and flushes started and not completed. */
  get inFlight(): number {
    const started = this.readOps + this.writeOps + this.zeroOps + this.flushOps;
    const done = this.readLatency.count + this.writeLatency.count + this.zeroLatency.count + this.flushLatency.count;
    return started - done;
  }
}
