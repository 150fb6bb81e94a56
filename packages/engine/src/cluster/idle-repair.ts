import { volumeState } from "../replication/replica-set.js";
import type { ReplicatedVolume } from "../replication/replicated-volume.js";
import type { Logger } from "../util/log.js";
import { readAttachments } from "./attachments.js";
import type { ClusterMembership, ClusterNode } from "./membership.js";

/** How often a repair checks whether its volume is whole again. */
const CHECK_INTERVAL_MS = 500;

/** Opens a writable frontend of a volume on this node (not exported over NBD, not recorded as an attachment). */
export type OpenRepairFrontend = (name: string) => Promise<ReplicatedVolume>;

/**
 * The leader's repair of volumes attached nowhere. A replica out of sync is
 * otherwise rebuilt only by the volume's frontend, so a volume nobody has
 * attached would stay on fewer copies until someone does. For such a volume
 * whose out-of-sync replica's node is up, the leader opens a frontend of its
 * own (a new epoch, no NBD export, no attachment record): it rebuilds the
 * replica like any frontend, then detaches cleanly. An application attaching
 * meanwhile takes a newer epoch, which fences the repair; its own frontend
 * finishes the rebuild.
 */
export class IdleVolumeRepairer {
  readonly #m: ClusterMembership;
  readonly #open: OpenRepairFrontend;
  readonly #log: Logger;
  readonly #running = new Map<string, ReplicatedVolume | null>();
  #stopped = false;

  constructor(m: ClusterMembership, open: OpenRepairFrontend, log: Logger) {
    this.#m = m;
    this.#open = open;
    this.#log = log;
  }

  /** Volumes being repaired now. */
  get running(): string[] {
    return [...this.#running.keys()];
  }

  /** Starts a repair for each record that needs one and has none running; returns the names started. */
  async pass(
    records: readonly { name: string; replicas: readonly string[]; inSync: readonly string[] }[],
    nodes: readonly ClusterNode[],
  ): Promise<string[]> {
    this.#stopped = false;
    const started: string[] = [];
    const alive = (id: string) => nodes.some((n) => n.nodeId === id && n.alive);
    for (const r of records) {
      if (this.#running.has(r.name)) continue;
      const lagging = r.replicas.filter((id) => !r.inSync.includes(id) && alive(id));
      if (lagging.length === 0 || !r.inSync.some(alive)) continue;
      // Attached (even read-only): its frontend repairs it, or a writer's epoch would fence the readers.
      if ((await readAttachments(this.#m, r.name)).entries.length > 0) continue;
      this.#running.set(r.name, null);
      started.push(`${r.name}: ${lagging.join(", ")}`);
      void this.#repair(r.name);
    }
    return started;
  }

  async #repair(name: string): Promise<void> {
    let rv: ReplicatedVolume | null = null;
    try {
      rv = await this.#open(name);
      this.#running.set(name, rv);
      while (rv.serving && !this.#stopped) {
        if (volumeState(rv.status()) === "healthy" && !rv.resyncing) {
          const { clean } = await rv.detach(false);
          this.#log.log("info", "idle volume repaired", { volume: name, epoch: rv.epoch, clean });
          return;
        }
        await new Promise((r) => setTimeout(r, CHECK_INTERVAL_MS));
      }
      // Fenced (an application attached it; its frontend carries on) or leadership lost.
      this.#log.log("info", "idle volume repair handed over", { volume: name, epoch: rv.epoch });
    } catch (error) {
      this.#log.log("warn", "idle volume repair failed; next pass tries again", { volume: name, error: String(error) });
    } finally {
      rv?.close();
      this.#running.delete(name);
    }
  }

  /** Stops every repair (leadership lost, engine stopping); their logs stay, so the next frontend resyncs. */
  stop(): void {
    this.#stopped = true;
    for (const rv of this.#running.values()) rv?.close();
  }
}
