import type { Pool } from "../store/pool.js";
import { SpaceAlarm, type SpaceCrossing } from "../store/space-alarm.js";
import type { Logger } from "../util/log.js";
import { formatBytes } from "../util/size.js";

/**
 * How often the pool's usage is compared with the alert thresholds. A poll, not a hook on the write path:
 * an alert a second late costs nothing, a check per allocation would cost every write.
 */
export const SPACE_CHECK_INTERVAL_MS = 1_000;

/** Where crossings go besides the log (the cluster's event stream); called every check, with none too, so it can retry. */
export interface SpaceAlertSink {
  publish(crossings: readonly SpaceCrossing[]): void;
}

/**
 * Watches the pool's used space against the alert thresholds: each crossing
 * is logged once (warn when raised) and handed to the sink, and the alarm's
 * state is what the metrics report.
 */
export class SpaceWatch {
  readonly alarm: SpaceAlarm;
  readonly #pool: Pool;
  readonly #log: Logger;
  #sink: SpaceAlertSink | null = null;
  #timer: NodeJS.Timeout | null = null;

  constructor(pool: Pool, log: Logger, alarm = new SpaceAlarm()) {
    this.#pool = pool;
    this.#log = log;
    this.alarm = alarm;
  }

  /** Sends crossings from now on to `sink` as well (a cluster node: the event stream). */
  setSink(sink: SpaceAlertSink | null): void {
    this.#sink = sink;
  }

  /** Compares usage now with the thresholds; returns (and reports) the crossings. */
  check(): SpaceCrossing[] {
    const crossings = this.alarm.check(this.#pool.space());
    for (const c of crossings) {
      const full = c.thresholdPercent >= 100;
      const what = full ? "pool full" : `pool ${c.thresholdPercent}% used`;
      this.#log.log(c.state === "raised" ? "warn" : "info", `${what}: ${c.state}`, {
        pool: this.#pool.device.path,
        thresholdPercent: c.thresholdPercent,
        usedBytes: c.usedBytes,
        totalBytes: c.totalBytes,
        used: `${formatBytes(c.usedBytes)} of ${formatBytes(c.totalBytes)}`,
      });
    }
    this.#sink?.publish(crossings);
    return crossings;
  }

  start(intervalMs = SPACE_CHECK_INTERVAL_MS): void {
    this.check();
    this.#timer = setInterval(() => this.check(), intervalMs);
    this.#timer.unref();
  }

  stop(): void {
    if (this.#timer) clearInterval(this.#timer);
    this.#timer = null;
  }
}
