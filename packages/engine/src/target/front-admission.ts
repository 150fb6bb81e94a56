import assert from "node:assert";
import type { AdmissionWaiter, RequestAdmission } from "../nbd/export.js";
import type { FrontWaiter } from "../qos/front-scheduler.js";
import type { QosManager } from "../qos/qos-manager.js";
import type { SchedulerClient } from "../qos/scheduler-client.js";

/**
 * One export handle's way through the front scheduler of `qos` (a handle is
 * one connection's, so it has one waiter), under the QoS state kept at `key`
 * (a volume's uid, a replicated volume's key; a key without state, such as a
 * snapshot's, shares one unclassified place). The state is looked up per
 * request: a policy set or a volume's QoS removed after the handle opened
 * takes effect on its next request.
 */
export class FrontAdmission implements RequestAdmission {
  readonly #qos: QosManager;
  readonly #key: string;
  /** The waiter's entry in the scheduler's queue: made once, reused for each request that waits. */
  #entry: FrontWaiter | null = null;
  #waiter: AdmissionWaiter | null = null;
  /** The client its waiting request queued under (for `cancel`); null while none waits. */
  #waitingClient: SchedulerClient<FrontWaiter> | null = null;

  constructor(qos: QosManager, key: string) {
    this.#qos = qos;
    this.#key = key;
  }

  enter(waiter: AdmissionWaiter, backlogged: boolean): boolean {
    // The common case, nothing reserved or weighed anywhere: one field read per request.
    if (!this.#qos.front.engaged) return true;
    const client = this.#qos.frontClientOf(this.#key);
    if (this.#qos.front.enter(client, this.#entryOf(waiter), backlogged)) return true;
    this.#waitingClient = client;
    return false;
  }

  cancel(waiter: AdmissionWaiter): boolean {
    const client = this.#waitingClient;
    if (client === null || this.#entry === null || waiter !== this.#waiter) return false;
    this.#waitingClient = null;
    return this.#qos.front.cancel(client, this.#entry);
  }

  #entryOf(waiter: AdmissionWaiter): FrontWaiter {
    if (this.#entry !== null) {
      assert(waiter === this.#waiter, "an export handle serves one connection");
      return this.#entry;
    }
    this.#waiter = waiter;
    this.#entry = {
      run: () => {
        this.#waitingClient = null;
        waiter.onAdmitted();
      },
    };
    return this.#entry;
  }
}
