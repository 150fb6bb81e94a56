import assert from "node:assert";
import { DiskScheduler, type ScheduledIo } from "./disk-scheduler.js";
import { FrontScheduler, type FrontWaiter } from "./front-scheduler.js";
import { DEFAULT_WEIGHT, isUnlimited, type QosPolicy } from "./policy.js";
import type { SchedulerClient } from "./scheduler-client.js";
import { type Clock, type QueuedIo, realClock, VolumeThrottle } from "./volume-throttle.js";

/** One I/O on its way through a volume's throttle and the disk scheduler. */
export interface QosIo {
  readonly write: boolean;
  readonly bytes: number;
  /** Runs the I/O in the store; must call `finish` exactly once when it completes. */
  execute(finish: () => void): void;
}

/** QoS state of one volume: its throttle (limits), its place in the disk scheduler and at the front. */
export class VolumeQos {
  readonly throttle: VolumeThrottle;
  readonly client: SchedulerClient<ScheduledIo>;
  /** Its place in the front scheduler (NBD requests started by this daemon's CPU): same reservation and weight. */
  readonly front: SchedulerClient<FrontWaiter>;
  #policy: QosPolicy;
  /** The policy limits and reserves nothing (cached: the I/O path reads it per request). */
  unlimited: boolean;
  /**
   * Paced by its limits only, never queued for a slot of this disk: a
   * replicated volume's frontend, whose I/O lands on its replicas' disks
   * (this node's own replica takes its slot there). Holding a slot for a
   * whole fan-out would let frontend I/Os fill every slot while their own
   * local replica I/O waits for one.
   */
  readonly limitsOnly: boolean;

  constructor(
    policy: QosPolicy,
    throttle: VolumeThrottle,
    client: SchedulerClient<ScheduledIo>,
    front: SchedulerClient<FrontWaiter>,
    limitsOnly = false,
  ) {
    this.#policy = policy;
    this.unlimited = isUnlimited(policy);
    this.throttle = throttle;
    this.client = client;
    this.front = front;
    this.limitsOnly = limitsOnly;
  }

  get policy(): QosPolicy {
    return this.#policy;
  }

  set policy(policy: QosPolicy) {
    this.#policy = policy;
    this.unlimited = isUnlimited(policy);
  }
}

/** What a volume's QoS reports (per-volume metrics). */
export interface VolumeQosStatus {
  throttledMs: number;
  delayedIos: number;
  queuedIos: number;
  servedByReservation: number;
  servedByWeight: number;
}

/** The finish of an I/O that took no scheduler slot. */
const NO_SLOT = (): void => undefined;

class Pending implements QueuedIo {
  readonly write: boolean;
  readonly bytes: number;
  readonly #io: QosIo;
  readonly #manager: QosManager;
  readonly #qos: VolumeQos;
  readonly #finish = (): void => this.#manager.scheduler.done();

  constructor(manager: QosManager, qos: VolumeQos, io: QosIo) {
    this.#manager = manager;
    this.#qos = qos;
    this.#io = io;
    this.write = io.write;
    this.bytes = io.bytes;
  }

  /** Past the throttle: on to the disk scheduler (or straight on, for a limits-only volume). */
  start(): void {
    if (this.#qos.limitsOnly) this.#io.execute(NO_SLOT);
    else this.#manager.scheduler.submit(this.#qos.client, this);
  }

  /** Given a slot by the scheduler: into the store. */
  run(): void {
    this.#io.execute(this.#finish);
  }
}

/** NBD requests started per turn of the event loop while the front scheduler engages (see FrontScheduler). */
export const DEFAULT_FRONT_PER_TURN = { minPerTurn: 4, maxPerTurn: 64 };

/**
 * QoS of one disk pool: every volume's limits, the disk's scheduler and the
 * front's. The schedulers only engage once some volume reserves IOPS or has
 * a non-default weight; until then, and for a volume without limits, I/O
 * goes straight to the store with no extra work, and the front lets every
 * request start at once.
 *
 * The front matters because the CPU in front of the disk is a server too: a
 * flood of requests from other volumes, all read, parsed and answered in
 * arrival order, leaves a reserved volume its share of arrivals whatever the
 * disk scheduler does (with the page cache in front, the disk is never the
 * bottleneck). Engaged, the front rations the requests started per turn of
 * the event loop and orders the rest by the same mClock tags as the disk
 * (see FrontScheduler).
 */
export class QosManager {
  readonly scheduler: DiskScheduler;
  readonly front: FrontScheduler;
  readonly #clock: Clock;
  readonly #volumes = new Map<string, VolumeQos>();
  /** Where requests of exports without QoS state of their own (snapshots) queue at the front: one share together. */
  readonly #unclassified: SchedulerClient<FrontWaiter>;
  /** Volumes with a reservation or a non-default weight. */
  #scheduled = 0;

  constructor(
    maxInFlight: number,
    clock: Clock = realClock,
    front: FrontScheduler = new FrontScheduler(DEFAULT_FRONT_PER_TURN, clock),
  ) {
    this.#clock = clock;
    this.scheduler = new DiskScheduler(maxInFlight, clock);
    this.front = front;
    this.#unclassified = this.front.addClient(0, DEFAULT_WEIGHT);
  }

  /** The front scheduler's client of `key`'s requests: its volume's, or the one shared by exports without QoS state. */
  frontClientOf(key: string): SchedulerClient<FrontWaiter> {
    return this.#volumes.get(key)?.front ?? this.#unclassified;
  }

  /**
   * Sets (or replaces, live) the limits of `uid`, whose I/O is paced by them
   * and takes no slot of this disk (see {@link VolumeQos.limitsOnly}). The
   * policy must reserve nothing and have the default weight.
   */
  applyLimits(uid: string, policy: QosPolicy): VolumeQos {
    assert(!needsScheduling(policy), `limits-only QoS of ${uid} cannot reserve or weigh`);
    const existing = this.#volumes.get(uid);
    if (existing && !existing.limitsOnly) this.remove(uid);
    else if (existing) return this.apply(uid, policy);
    const qos = new VolumeQos(
      policy,
      new VolumeThrottle(policy.limits, this.#clock),
      this.scheduler.addClient(0, DEFAULT_WEIGHT),
      this.front.addClient(0, DEFAULT_WEIGHT),
      true,
    );
    this.#volumes.set(uid, qos);
    return qos;
  }

  /** Sets (or replaces, live) the policy of the volume `uid`. */
  apply(uid: string, policy: QosPolicy): VolumeQos {
    const existing = this.#volumes.get(uid);
    if (existing) {
      this.#countScheduled(existing.policy, -1);
      existing.policy = policy;
      existing.throttle.reconfigure(policy.limits);
      existing.client.reset(policy.reservationIops, policy.weight);
      existing.front.reset(policy.reservationIops, policy.weight);
      this.#countScheduled(policy, 1);
      return existing;
    }
    const qos = new VolumeQos(
      policy,
      new VolumeThrottle(policy.limits, this.#clock),
      this.scheduler.addClient(policy.reservationIops, policy.weight),
      this.front.addClient(policy.reservationIops, policy.weight),
    );
    this.#volumes.set(uid, qos);
    this.#countScheduled(policy, 1);
    return qos;
  }

  /** Forgets a deleted volume; anything it had waiting still runs. */
  remove(uid: string): void {
    const qos = this.#volumes.get(uid);
    if (!qos) return;
    this.#volumes.delete(uid);
    this.#countScheduled(qos.policy, -1);
    qos.throttle.drain();
    this.scheduler.removeClient(qos.client);
    this.front.removeClient(qos.front);
  }

  get(uid: string): VolumeQos | undefined {
    return this.#volumes.get(uid);
  }

  /** Counts a policy in or out of the scheduled ones; the front engages while any is. */
  #countScheduled(policy: QosPolicy, delta: 1 | -1): void {
    if (!needsScheduling(policy)) return;
    this.#scheduled += delta;
    assert(this.#scheduled >= 0, "more scheduled policies removed than applied");
    this.front.setEngaged(this.#scheduled > 0);
  }

  /** True when I/O of this volume may skip QoS entirely (two field reads: it runs per request). */
  passThrough(qos: VolumeQos): boolean {
    return this.#scheduled === 0 && qos.unlimited;
  }

  /** Sends an I/O through the volume's throttle and the disk scheduler. False when its throttle queue is full. */
  submit(qos: VolumeQos, io: QosIo): boolean {
    const pending = new Pending(this, qos, io);
    if (qos.throttle.unlimited) {
      pending.start();
      return true;
    }
    return qos.throttle.submit(pending);
  }

  status(uid: string): VolumeQosStatus {
    const qos = this.#volumes.get(uid);
    if (!qos) return { throttledMs: 0, delayedIos: 0, queuedIos: 0, servedByReservation: 0, servedByWeight: 0 };
    return {
      throttledMs: Math.round(qos.throttle.throttledMs),
      delayedIos: qos.throttle.delayedIos,
      queuedIos: qos.throttle.queuedIos,
      servedByReservation: qos.client.servedByReservation,
      servedByWeight: qos.client.servedByWeight,
    };
  }
}

function needsScheduling(policy: QosPolicy): boolean {
  return policy.reservationIops > 0 || policy.weight !== DEFAULT_WEIGHT;
}
