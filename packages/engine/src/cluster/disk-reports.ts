import { KeelsonError } from "@keelson/sdk";
import type { Logger } from "../util/log.js";
import { type ClusterMembership, KEY_PREFIX } from "./membership.js";

const DISKS = `${KEY_PREFIX}/disks/`;
/** How often a node reports its pool (and at once on join). */
export const DISK_REPORT_INTERVAL_MS = 10_000;

/** A node's disk pool as recorded in etcd. */
export interface DiskRecord {
  nodeId: string;
  poolUid: string;
  path: string;
  totalBytes: number;
  freeBytes: number;
  volumeCount: number;
  snapshotCount: number;
  updatedAtMs: number;
}

/** Every node's last disk report, by node. */
export async function listDiskReports(m: ClusterMembership): Promise<Map<string, DiskRecord>> {
  let all: Record<string, string>;
  try {
    all = await m.client.getAll().prefix(DISKS).strings();
  } catch (error) {
    throw new KeelsonError({ code: "UNAVAILABLE", message: `etcd: disk reports: ${(error as Error).message}`, cause: error });
  }
  const records = Object.values(all).map((json) => JSON.parse(json) as DiskRecord);
  return new Map(records.map((r) => [r.nodeId, r]));
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
      await this.#m.client.put(`${DISKS}${record.nodeId}`).value(JSON.stringify(record));
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
