import { type DiskRecord, refs } from "../metadata/index.js";
import type { Logger } from "../util/log.js";
import type { ClusterMembership } from "./membership.js";

/** How often a node reports its pool (and at once on join). */
export const DISK_REPORT_INTERVAL_MS = 10_000;

export type { DiskRecord };

/** Every node's last disk report, by node; UNAVAILABLE while the store cannot be read. */
export async function listDiskReports(m: ClusterMembership): Promise<Map<string, DiskRecord>> {
  const records = await m.metadata.list("disk");
  return new Map(records.map(({ value: r }) => [r.nodeId, r]));
}

/**
 * Keeps this node's disk record in etcd current: written on start and every
 * interval. Not tied to the liveness lease, so the cluster still knows a down
 * node's disk (what it held, how full it was) when placing replicas elsewhere.
 */
export class DiskReporter {
  readonly #m: ClusterMembership;
  readonly #collect: () => Omit<DiskRecord, "nodeId" | "updatedAtMs">;
  readonly #log: Logger;
  #timer: NodeJS.Timeout | null = null;
  #failing = false;

  constructor(m: ClusterMembership, collect: () => Omit<DiskRecord, "nodeId" | "updatedAtMs">, log: Logger) {
    this.#m = m;
    this.#collect = collect;
    this.#log = log;
  }

  /** Writes one report; failures are logged once per outage and retried on the next tick. */
  async report(): Promise<void> {
    const record: DiskRecord = { nodeId: this.#m.nodeId, ...this.#collect(), updatedAtMs: Date.now() };
    try {
      await this.#m.metadata.put(refs.disk(record.nodeId), record);
      if (this.#failing) this.#log.log("info", "disk report written again", { node: record.nodeId });
      this.#failing = false;
    } catch (error) {
      if (!this.#failing) this.#log.log("warn", "disk report failed", { node: record.nodeId, error: String(error) });
      this.#failing = true;
    }
  }

  async start(intervalMs = DISK_REPORT_INTERVAL_MS): Promise<void> {
    await this.report();
    this.#timer = setInterval(() => void this.report(), intervalMs);
    this.#timer.unref();
  }

  stop(): void {
    if (this.#timer) clearInterval(this.#timer);
    this.#timer = null;
  }
}
