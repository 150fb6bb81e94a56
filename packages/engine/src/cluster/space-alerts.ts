import { refs, type SpaceAlertRecord } from "../metadata/index.js";
import type { SpaceCrossing } from "../store/space-alarm.js";
import type { Logger } from "../util/log.js";
import type { ClusterMembership } from "./membership.js";

/**
 * Publishes this node's pool space crossings to the cluster
 * (`/keelson/v1/space-alerts/<node>/<threshold>`), where every Watch sees
 * each as an event. A put that fails is tried again on the next check; only
 * the latest crossing of each threshold is kept meanwhile (so what waits is
 * bounded by the number of thresholds), and an older one never overwrites it.
 */
export class SpaceAlertPublisher {
  readonly #m: ClusterMembership;
  readonly #poolUid: string;
  readonly #log: Logger;
  /** Crossings not yet in etcd, by threshold: the latest of each. */
  readonly #pending = new Map<number, SpaceAlertRecord>();
  #busy = false;
  #failing = false;

  constructor(m: ClusterMembership, poolUid: string, log: Logger) {
    this.#m = m;
    this.#poolUid = poolUid;
    this.#log = log;
  }

  publish(crossings: readonly SpaceCrossing[]): void {
    for (const c of crossings) {
      this.#pending.set(c.thresholdPercent, { nodeId: this.#m.nodeId, poolUid: this.#poolUid, ...c, atMs: Date.now() });
    }
    if (this.#pending.size > 0 && !this.#busy) void this.#flush();
  }

  async #flush(): Promise<void> {
    this.#busy = true;
    try {
      for (const [threshold, record] of [...this.#pending]) {
        await this.#m.metadata.put(refs.spaceAlert(record.nodeId, threshold), record);
        // A newer crossing of the same threshold may have come while the put ran: it stays pending.
        if (this.#pending.get(threshold) === record) this.#pending.delete(threshold);
      }
      if (this.#failing) this.#log.log("info", "space alerts published again", { node: this.#m.nodeId });
      this.#failing = false;
    } catch (error) {
      if (!this.#failing) this.#log.log("warn", "space alert not published yet", { node: this.#m.nodeId, error: String(error) });
      this.#failing = true;
    } finally {
      this.#busy = false;
    }
  }
}
