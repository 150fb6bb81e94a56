import createDebug from "debug";
import type { MetadataStore } from "../metadata/index.js";
import type { Logger } from "../util/log.js";
import { listNodes, recordNodeState } from "./membership.js";

const debug = createDebug("keelson:cluster");

/** What one repair pass did (see the replication module's RepairReport). */
export interface RepairOutcome {
  replaced: string[];
  removed: string[];
  stuck: string[];
  rebuilding?: string[];
}

/** How often the leader looks at the cluster (observe -> analyse -> act). */
export const RECONCILE_INTERVAL_MS = 500;

/**
 * The leader's control loop. It keeps each node's recorded state in step
 * with its liveness lease (a node whose lease expired is marked down, one
 * that came back is marked up), so every engine and client reads the same
 * answer from the cluster's metadata; then it repairs degraded volumes (a replica lost for
 * good is placed on another node, and its frontend rebuilds it there).
 */
export class Reconciler {
  readonly #metadata: MetadataStore;
  readonly #log: Logger;
  #timer: NodeJS.Timeout | null = null;
  #running = false;
  /** Passes completed (tests and logs watch it move). */
  passes = 0;

  readonly #repair: (() => Promise<RepairOutcome>) | null;
  /** Stuck repairs already logged (each is logged once, not every pass). */
  readonly #reported = new Set<string>();

  /** `repair` is the degraded-volume repair each pass runs after node states (replication provides it). */
  constructor(metadata: MetadataStore, log: Logger, repair?: () => Promise<RepairOutcome>) {
    this.#metadata = metadata;
    this.#log = log;
    this.#repair = repair ?? null;
  }

  start(): void {
    if (this.#timer) return;
    this.#timer = setInterval(() => void this.#pass(), RECONCILE_INTERVAL_MS);
    void this.#pass();
  }

  stop(): void {
    if (this.#timer) clearInterval(this.#timer);
    this.#timer = null;
  }

  async #pass(): Promise<void> {
    if (this.#running) return; // a slow etcd must not stack passes up
    this.#running = true;
    try {
      for (const node of await listNodes(this.#metadata)) {
        const observed = node.alive ? "up" : "down";
        if (node.state === observed) continue;
        await recordNodeState(this.#metadata, node.nodeId, observed);
        this.#log.log("info", "node state changed", { node: node.nodeId, state: observed });
      }
      if (this.#repair) {
        const { replaced, removed, stuck, rebuilding = [] } = await this.#repair();
        for (const r of replaced) this.#log.log("info", "replica replaced", { change: r });
        for (const r of rebuilding) this.#log.log("info", "rebuilding a volume attached nowhere", { lagging: r });
        for (const r of removed) this.#log.log("info", "stale replica copy removed", { what: r });
        for (const s of stuck) if (!this.#reported.has(s)) this.#log.log("warn", "volume not repaired", { why: s });
        this.#reported.clear();
        for (const s of stuck) this.#reported.add(s);
      }
      this.passes++;
    } catch (error) {
      debug("reconcile pass failed: %s", String(error));
    } finally {
      this.#running = false;
    }
  }
}
