import { type Attachment, isKeelsonError, KeelsonError } from "@keelson/sdk";
import type { OpenLocalExport } from "../replication/local-replica.js";
import type { RebuildThrottle } from "../replication/rebuild-throttle.js";
import { DEFAULT_REPLICA_TIMEOUT_MS, type ReplicatedVolume } from "../replication/replicated-volume.js";
import type { Logger } from "../util/log.js";
import { readAttachments, removeAttachment } from "./attachments.js";
import { findClusterVolume } from "./cluster-volumes.js";
import type { ClusterMembership } from "./membership.js";
import { findNode } from "./peers.js";
import { attachReplicatedVolume, fenceEveryFrontend, forgetAttachment } from "./replicated-attach.js";
import { policyOf, type ReplicatedQos } from "./replicated-qos.js";
import { StatusPublisher } from "./status-publisher.js";

/** How often the QoS in the records of the volumes attached here is compared with what their frontends apply. */
export const QOS_REFRESH_INTERVAL_MS = 1_000;

/** Longest a forwarded attach may take on the peer (a resync may be part of it): the caller's deadline bounds it. */
const FORWARDED_ATTACH_TIMEOUT_MS = 600_000;

/** An attach of a replicated volume. */
export interface AttachRequest {
  name: string;
  /** The node to attach on; this node when empty or its own id. */
  nodeId: string;
  /** Replica I/O deadline; 0 for the default. */
  replicaTimeoutMs: number;
  readOnly: boolean;
  /** Take a writable attachment over from another node (that node is lost). */
  takeover: boolean;
}

/** A detach of a replicated volume. */
export interface DetachRequest {
  name: string;
  /** The node to detach on; this node when empty or its own id. */
  nodeId: string;
  force: boolean;
}

/** Where an attach ended up: on this node (its frontend), or on a peer (what it answered). */
export type AttachOutcome =
  | { readonly on: "local"; readonly volume: ReplicatedVolume }
  | { readonly on: "peer"; readonly attachment: Attachment };

/** What a {@link VolumeAttacher} works with. */
export interface VolumeAttacherOptions {
  /** Replicated volumes attached on this node, by name (the NBD catalog serves them); shared, not copied. */
  frontends: Map<string, ReplicatedVolume>;
  /** Paces the rebuilds of every frontend on this node. */
  rebuildThrottle: RebuildThrottle;
  /** Opens one of this node's exports in-process (a frontend's own replica). */
  openLocal: OpenLocalExport;
  /** Where the frontends' QoS is enforced on this node. */
  qos: ReplicatedQos;
  nodeId: string;
  log: Logger;
}

/**
 * Attach and detach of replicated volumes on this engine: the one home of
 * the frontends attached here, the attaches under way and the status
 * publishers of writable attachments. One per engine.
 */
export class VolumeAttacher {
  readonly #o: VolumeAttacherOptions;
  /** Attaches under way, by volume: a retry joins one rather than starting one that would fence it. */
  readonly #underWay = new Map<string, Promise<ReplicatedVolume>>();
  /** Each writable attachment's status publisher. */
  readonly #publishers = new WeakMap<ReplicatedVolume, StatusPublisher>();
  /** The QoS policy last applied to each frontend here, as stored (compared to the record's on each refresh). */
  readonly #appliedQos = new Map<string, string>();
  /** Follows the records' QoS for the frontends here while any is attached; null when none is. */
  #qosTimer: NodeJS.Timeout | null = null;
  #refreshing = false;

  constructor(options: VolumeAttacherOptions) {
    this.#o = options;
  }

  /** Stops following QoS changes (the engine is closing). Idempotent. */
  close(): void {
    if (this.#qosTimer) clearInterval(this.#qosTimer);
    this.#qosTimer = null;
  }

  /**
   * Every QOS_REFRESH_INTERVAL_MS, the policy (and size) in each attached volume's record
   * is applied to its frontend here when it changed: SetVolumeQos through any
   * node only writes the record, so a change reaches every attached node
   * within the interval, and the record (last writer wins) is the one truth.
   */
  #followQos(m: ClusterMembership): void {
    if (this.#qosTimer) return;
    this.#qosTimer = setInterval(() => void this.#refreshQos(m), QOS_REFRESH_INTERVAL_MS);
    this.#qosTimer.unref();
  }

  /**
   * Applies now what the record of `name` says (its QoS and size) when it is
   * attached here (a SetVolumeQos or ResizeVolume through this node); not
   * behind a refresh pass under way.
   */
  async followRecord(m: ClusterMembership, name: string): Promise<void> {
    const rv = this.#o.frontends.get(name);
    if (rv?.serving) await this.#applyRecord(m, rv);
  }

  async #refreshQos(m: ClusterMembership): Promise<void> {
    if (this.#refreshing) return;
    this.#refreshing = true;
    try {
      for (const rv of [...this.#o.frontends.values()]) if (rv.serving) await this.#applyRecord(m, rv);
    } finally {
      this.#refreshing = false;
    }
  }

  /** Attaches on the node asked for (forwarded when it is another), idempotently. */
  async attach(m: ClusterMembership, req: AttachRequest): Promise<AttachOutcome> {
    const { name } = req;
    if (req.nodeId && req.nodeId !== this.#o.nodeId) {
      const node = await findNode(m, req.nodeId);
      if (!node.alive) throw new KeelsonError({ code: "UNAVAILABLE", message: `node ${req.nodeId} is down` });
      const forwarded = { name, replicaTimeoutMs: req.replicaTimeoutMs, readOnly: req.readOnly, takeover: req.takeover };
      const attachment = await m.peers.withPeer(node, (c) => c.attachVolume(forwarded), FORWARDED_ATTACH_TIMEOUT_MS);
      return { on: "peer", attachment };
    }
    // A retry (the client's deadline passed while a resync ran) joins the attach under way rather
    // than starting one that would fence it, again and again.
    const underWay = this.#underWay.get(name);
    if (underWay) await underWay.catch(() => undefined);
    const existing = this.#o.frontends.get(name);
    if (existing?.serving) {
      if (existing.readOnly === req.readOnly) return { on: "local", volume: existing };
      throw new KeelsonError({
        code: "ATTACHED_ELSEWHERE",
        message: `volume ${name} is attached ${existing.readOnly ? "read-only" : "writable"} on ${this.#o.nodeId}; detach it first`,
      });
    }
    const attaching = attachReplicatedVolume(m, name, {
      replicaTimeoutMs: req.replicaTimeoutMs || DEFAULT_REPLICA_TIMEOUT_MS,
      rebuildThrottle: this.#o.rebuildThrottle,
      openLocal: this.#o.openLocal,
      readOnly: req.readOnly,
      takeover: req.takeover,
      log: this.#o.log,
    }).then(async (rv) => {
      // Inside the attach under way: nothing may run between it ending and the frontend being registered.
      await this.#applyRecord(m, rv);
      return rv;
    });
    this.#underWay.set(name, attaching);
    let rv: ReplicatedVolume;
    try {
      rv = await attaching;
    } finally {
      if (this.#underWay.get(name) === attaching) this.#underWay.delete(name);
    }
    existing?.close();
    this.#o.frontends.set(name, rv);
    this.#followQos(m);
    if (!rv.readOnly) {
      const publisher = new StatusPublisher(m, rv);
      this.#publishers.set(rv, publisher);
      publisher.start();
    }
    this.#o.log.log("info", "volume attached", { volume: name, epoch: rv.epoch, readOnly: rv.readOnly, replicas: rv.status() });
    return { on: "local", volume: rv };
  }

  /**
   * Applies the volume's QoS and size (from its record) to the frontend. A
   * record that cannot be read now leaves the frontend unlimited until the
   * next SetVolumeQos reaches it; the attach itself stands. The size only
   * grows: ResizeVolume grew every replica before it recorded the size.
   */
  async #applyRecord(m: ClusterMembership, rv: ReplicatedVolume): Promise<void> {
    try {
      const record = await findClusterVolume(m, rv.name);
      if (!record) return;
      rv.grow(record.sizeBytes);
      const policy = policyOf(record);
      const stored = JSON.stringify(policy);
      if (this.#appliedQos.get(rv.name) === stored) return;
      this.#o.qos.apply(rv.name, policy);
      this.#appliedQos.set(rv.name, stored);
    } catch (error) {
      this.#o.log.log("warn", "QoS of an attached volume not applied", { volume: rv.name, error: String(error) });
    }
  }

  /**
   * Ends every attachment of the volume, for its deletion: every frontend is
   * fenced first (a new epoch in etcd and on the replicas), so none
   * acknowledges a write from then on, then each is detached with force
   * where it runs (a node that is down only loses its entry). Idempotent.
   */
  async fenceAndDetachAll(m: ClusterMembership, name: string): Promise<void> {
    const { entries } = await readAttachments(m, name);
    if (entries.length === 0) return;
    const epoch = await fenceEveryFrontend(m, name);
    this.#o.log.log("info", "volume fenced for deletion", { volume: name, epoch, attachments: entries.map((e) => e.nodeId) });
    for (const e of entries) await this.detach(m, { name, nodeId: e.nodeId, force: true });
  }

  /** Detaches on the node asked for; a node that is down only loses its entry in the record. Idempotent. */
  async detach(m: ClusterMembership, req: DetachRequest): Promise<void> {
    const { name } = req;
    if (req.nodeId && req.nodeId !== this.#o.nodeId) {
      const node = await findNode(m, req.nodeId);
      if (node.alive) {
        try {
          await m.peers.withPeer(node, (c) => c.detachVolume({ name, force: req.force }));
          return;
        } catch (error) {
          // Not answering (just killed, or cut off): handled like a node that is down.
          if (!isKeelsonError(error, "UNAVAILABLE") && !isKeelsonError(error, "DEADLINE_EXCEEDED")) throw error;
        }
      }
      await forgetAttachment(m, name, req.nodeId);
      this.#o.log.log("warn", "attachment of an unreachable node removed (a writer there is fenced)", {
        volume: name,
        node: req.nodeId,
      });
      return;
    }
    const rv = this.#o.frontends.get(name);
    if (rv) {
      const { clean } = await rv.detach(req.force);
      await this.#publishers.get(rv)?.stop("detached");
      this.#o.frontends.delete(name);
      this.#o.qos.remove(name);
      this.#appliedQos.delete(name);
      await removeAttachment(m, name, this.#o.nodeId, rv.epoch);
      this.#o.log.log("info", "volume detached", { volume: name, epoch: rv.epoch, readOnly: rv.readOnly, clean });
      return;
    }
    // Not served here (say the engine restarted): the record must not keep claiming it.
    await removeAttachment(m, name, this.#o.nodeId);
  }
}
