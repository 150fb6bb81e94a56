import { refs, type VolumeStatusRecord } from "../metadata/index.js";
import { volumeState } from "../replication/replica-set.js";
import type { ReplicatedVolume } from "../replication/replicated-volume.js";
import type { ClusterMembership } from "./membership.js";

/** How often an attached volume's status is compared with what was last published. */
export const STATUS_INTERVAL_MS = 1_000;

/**
 * Publishes a writable attachment's view of its volume to
 * the volume's status record whenever it changes (state, a replica's
 * state, rebuild progress: at most once an interval), so watchers anywhere
 * in the cluster see it. A failed put is tried again on the next tick.
 */
export class StatusPublisher {
  readonly #m: ClusterMembership;
  readonly #rv: ReplicatedVolume;
  #last = "";
  #timer: NodeJS.Timeout | null = null;
  #busy = false;

  constructor(m: ClusterMembership, rv: ReplicatedVolume) {
    this.#m = m;
    this.#rv = rv;
  }

  start(): void {
    void this.publish();
    this.#timer = setInterval(() => void this.publish(), STATUS_INTERVAL_MS);
    this.#timer.unref();
  }

  /** Publishes now if anything changed; `state` overrides the volume's (e.g. "detached"). */
  async publish(state?: string): Promise<void> {
    if (state === undefined && !this.#rv.serving) {
      // Closed or fenced: a newer attachment publishes from now on.
      await this.stop();
      return;
    }
    if (this.#busy) return;
    this.#busy = true;
    try {
      const replicas = this.#rv.status();
      const status: VolumeStatusRecord = {
        nodeId: this.#m.nodeId,
        epoch: this.#rv.epoch,
        state: state ?? volumeState(replicas),
        replicas: replicas.map((r) => ({
          nodeId: r.nodeId,
          state: r.state,
          rebuiltBytes: r.rebuiltBytes,
          rebuildTotalBytes: r.rebuildTotalBytes,
        })),
      };
      // Compared in its stored form: what watchers would see again is not published again.
      const json = JSON.stringify(status);
      if (json === this.#last) return;
      await this.#m.metadata.put(refs.status(this.#rv.name), status);
      this.#last = json;
    } catch {
      // the store away: the next tick tries again
    } finally {
      this.#busy = false;
    }
  }

  /** Stops publishing; `finalState` (when given) is published once more first. */
  async stop(finalState?: string): Promise<void> {
    if (this.#timer) clearInterval(this.#timer);
    this.#timer = null;
    if (finalState) {
      while (this.#busy) await new Promise((r) => setTimeout(r, 10));
      await this.publish(finalState);
    }
  }
}
