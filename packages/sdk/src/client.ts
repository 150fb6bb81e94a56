import {
  type ChannelCredentials,
  type ClientUnaryCall,
  type CallOptions as GrpcCallOptions,
  credentials as grpcCredentials,
  Metadata,
  type ServiceError,
} from "@grpc/grpc-js";
import {
  attachmentFromWire,
  attachmentRecordFromWire,
  clusterNodeFromWire,
  eventFromWire,
  extentsFromBitmap,
  nodeFromWire,
  policyToWire,
  snapshotFromWire,
  sourceToWire,
  volumeFromWire,
} from "./convert.js";
import { fromServiceError, KeelsonError } from "./errors.js";
import { EventServiceClient } from "./gen/keelson/v1/events.js";
import { NodeServiceClient, SnapshotServiceClient, VolumeServiceClient } from "./gen/keelson/v1/volume.js";
import type {
  Attachment,
  AttachmentRecord,
  AttachVolumeRequest,
  CallOptions,
  ClusterNode,
  CreateAndAttachRequest,
  CreateSnapshotRequest,
  CreateVolumeRequest,
  DeclareInSyncRequest,
  DeleteSnapshotRequest,
  DeleteVolumeRequest,
  DeleteVolumeResult,
  DetachVolumeRequest,
  EventCursor,
  FenceVolumeRequest,
  GetSnapshotChangesRequest,
  GetVolumeRequest,
  KeelsonEvent,
  ListSnapshotsRequest,
  NodeInfo,
  ResizeVolumeRequest,
  RevertVolumeRequest,
  SetDiskCapabilityRequest,
  SetVolumeQosRequest,
  Snapshot,
  SnapshotChanges,
  SnapshotRef,
  SnapshotThenCloneRequest,
  Volume,
  VolumeRef,
  WaitForOptions,
  WatchOptions,
} from "./types.js";

/** Deadline of a call when neither the client nor the call sets one. */
export const DEFAULT_CALL_TIMEOUT_MS = 10_000;
/** Attempts of an idempotent call (the first one included) on a retryable error. */
export const DEFAULT_MAX_ATTEMPTS = 4;
/** First backoff delay; each retry doubles it, with full jitter. */
export const DEFAULT_RETRY_BASE_DELAY_MS = 100;
/** Upper bound of one backoff delay. */
export const MAX_RETRY_DELAY_MS = 2_000;

/** Options of {@link createClient}. */
export interface ClientOptions {
  /** `host:port`, or `unix:/path/to/socket`. */
  address: string;
  /** TLS credentials from `@grpc/grpc-js`; plaintext when omitted. */
  credentials?: ChannelCredentials;
  /** Deadline of every call that sets none. */
  defaultTimeoutMs?: number;
  /** Attempts of idempotent calls on retryable errors; 1 disables retries. */
  maxAttempts?: number;
  /** First retry delay (doubles per attempt, full jitter). */
  retryBaseDelayMs?: number;
}

type Unary<Req, Res> = (
  request: Req,
  metadata: Metadata,
  options: Partial<GrpcCallOptions>,
  callback: (error: ServiceError | null, response: Res) => void,
) => ClientUnaryCall;

/**
 * Typed client of one keelson engine's control API. Create it with
 * {@link createClient}; close it with `close()` or `await using`.
 */
export class KeelsonClient implements AsyncDisposable {
  readonly #volumes: VolumeServiceClient;
  readonly #snapshots: SnapshotServiceClient;
  readonly #node: NodeServiceClient;
  readonly #events: EventServiceClient;
  readonly #timeoutMs: number;
  readonly #maxAttempts: number;
  readonly #retryBaseDelayMs: number;
  #closed = false;

  constructor(options: ClientOptions) {
    const creds = options.credentials ?? grpcCredentials.createInsecure();
    this.#volumes = new VolumeServiceClient(options.address, creds);
    this.#snapshots = new SnapshotServiceClient(options.address, creds);
    this.#node = new NodeServiceClient(options.address, creds);
    this.#events = new EventServiceClient(options.address, creds);
    this.#timeoutMs = options.defaultTimeoutMs ?? DEFAULT_CALL_TIMEOUT_MS;
    this.#maxAttempts = Math.max(1, options.maxAttempts ?? DEFAULT_MAX_ATTEMPTS);
    this.#retryBaseDelayMs = options.retryBaseDelayMs ?? DEFAULT_RETRY_BASE_DELAY_MS;
  }

  /**
   * Creates a thin volume, empty or as a clone of a snapshot or of a live
   * volume (sharing its data; writes to either never show in the other).
   * Idempotent: the same name, size, labels and source again return the
   * existing volume; anything different fails with ALREADY_EXISTS. Bad names
   * or sizes fail with INVALID_ARGUMENT; a missing source with
   * VOLUME_NOT_FOUND or SNAPSHOT_NOT_FOUND. `replicas` > 1 or `replicated`
   * make a cluster volume (attachable on any node); without a cluster that
   * fails with INVALID_ARGUMENT.
   *
   * @example
   * const vol = await client.createVolume({ name: "pg-data", sizeBytes: 10 * 2 ** 30 });
   * const one = await client.createVolume({ name: "scratch", sizeBytes: 2 ** 30, replicas: 1, replicated: true });
   * const copy = await client.createVolume({ name: "pg-test", sizeBytes: 0, source: { snapshot: { volume: "pg-data", name: "nightly" } } });
   */
  async createVolume(request: CreateVolumeRequest, options?: CallOptions): Promise<Volume> {
    const wire = {
      name: request.name,
      sizeBytes: request.sizeBytes,
      labels: request.labels ?? {},
      replicas: request.replicas ?? 0,
      source: sourceToWire(request.source),
      qosClass: request.qosClass ?? "",
      qos: policyToWire(request.qos),
      minInSync: request.minInSync ?? 0,
      replicated: request.replicated ?? false,
    };
    return volumeFromWire(await this.#call(this.#volumes.createVolume, this.#volumes, wire, options, true));
  }

  /**
   * Returns one volume; VOLUME_NOT_FOUND when it does not exist. Idempotent.
   *
   * @example
   * const { sizeBytes, allocatedBytes } = await client.getVolume({ name: "pg-data" });
   */
  async getVolume(request: GetVolumeRequest, options?: CallOptions): Promise<Volume> {
    const wire = { name: request.name, replicaOnly: request.replicaOnly ?? false };
    return volumeFromWire(await this.#call(this.#volumes.getVolume, this.#volumes, wire, options, true));
  }

  /**
   * Lists all volumes, ordered by name. Idempotent.
   *
   * @example
   * for (const v of await client.listVolumes()) console.log(v.name, v.sizeBytes);
   */
  async listVolumes(options?: CallOptions): Promise<Volume[]> {
    const res = await this.#call(this.#volumes.listVolumes, this.#volumes, {}, options, true);
    return res.volumes.map(volumeFromWire);
  }

  /**
   * Deletes a volume and frees its space. Not retried: a retry after a lost
   * reply would report VOLUME_NOT_FOUND for a delete that succeeded.
   * VOLUME_NOT_FOUND when absent; VOLUME_IN_USE while clients are connected
   * (unless `force`). A replicated volume goes from every replica and from
   * the cluster's records; VOLUME_IN_USE while attached (unless `force`).
   *
   * @example
   * const { freedBytes } = await client.deleteVolume({ name: "scratch" });
   */
  async deleteVolume(request: DeleteVolumeRequest, options?: CallOptions): Promise<DeleteVolumeResult> {
    const wire = { name: request.name, force: request.force ?? false, replicaOnly: request.replicaOnly ?? false };
    return await this.#call(this.#volumes.deleteVolume, this.#volumes, wire, options, false);
  }

  /**
   * Grows a volume online; clients see the new size when they reconnect.
   * Idempotent. Shrinking fails with SHRINK_NOT_SUPPORTED. A replicated
   * volume grows on every replica; UNAVAILABLE while one's node is down.
   *
   * @example
   * await client.resizeVolume({ name: "pg-data", sizeBytes: 20 * 2 ** 30 });
   */
  async resizeVolume(request: ResizeVolumeRequest, options?: CallOptions): Promise<Volume> {
    const wire = { name: request.name, sizeBytes: request.sizeBytes, replicaOnly: request.replicaOnly ?? false };
    return volumeFromWire(await this.#call(this.#volumes.resizeVolume, this.#volumes, wire, options, true));
  }

  /**
   * Puts a volume back to one of its snapshots: data and size become the
   * snapshot's. The volume must have no open connections (VOLUME_IN_USE).
   * Retried: reverting twice to the same snapshot leaves the same data.
   *
   * @example
   * await client.revertVolume({ name: "pg-data", snapshot: "before-migration" });
   */
  async revertVolume(request: RevertVolumeRequest, options?: CallOptions): Promise<Volume> {
    return volumeFromWire(await this.#call(this.#volumes.revertVolume, this.#volumes, request, options, true));
  }

  /**
   * Replaces a volume's QoS policy, live (in force within a second). A larger
   * reservation is admitted against the disk first (QOS_ADMISSION_DENIED).
   * Idempotent.
   *
   * @example
   * await client.setVolumeQos({ name: "pg-data", qos: { limits: { totalIops: { rate: 2000 } }, reservationIops: 500 } });
   */
  async setVolumeQos(request: SetVolumeQosRequest, options?: CallOptions): Promise<Volume> {
    const wire = { name: request.name, qosClass: request.qosClass ?? "", qos: policyToWire(request.qos) };
    return volumeFromWire(await this.#call(this.#volumes.setVolumeQos, this.#volumes, wire, options, true));
  }

  /**
   * Attaches a replicated volume on the node this client talks to: a new
   * epoch fences every older frontend, and the node's NBD export of the
   * volume then writes to all in-sync replicas. Not retried (each call takes
   * a new epoch). VOLUME_NOT_FOUND, UNAVAILABLE when no replica answers.
   *
   * @example
   * const att = await client.attachVolume({ name: "pg-data" });
   * console.log(att.epoch, att.export.nbdTcpUri);
   */
  async attachVolume(request: AttachVolumeRequest, options?: CallOptions): Promise<Attachment> {
    const wire = {
      name: request.name,
      replicaTimeoutMs: request.replicaTimeoutMs ?? 0,
      nodeId: request.nodeId ?? "",
      readOnly: request.readOnly ?? false,
      takeover: request.takeover ?? false,
    };
    // Retried only in the idempotent modes: a takeover fences, and a retry would fence again.
    const idempotent = !request.takeover;
    return attachmentFromWire(await this.#call(this.#volumes.attachVolume, this.#volumes, wire, options, idempotent));
  }

  /**
   * Stops serving a volume on a node (default: the node called). A writable
   * attachment flushes its replicas first. VOLUME_IN_USE while NBD clients
   * are connected, unless `force`. Idempotent.
   *
   * @example
   * await client.detachVolume({ name: "pg-data", nodeId: "node1" });
   */
  async detachVolume(request: DetachVolumeRequest, options?: CallOptions): Promise<void> {
    const wire = { name: request.name, nodeId: request.nodeId ?? "", force: request.force ?? false };
    await this.#call(this.#volumes.detachVolume, this.#volumes, wire, options, true);
  }

  /**
   * Where a volume is attached (writable on at most one node, or read-only on many), as etcd records it.
   *
   * @example
   * const where = await client.listAttachments({ name: "pg-data" });
   */
  async listAttachments(request: VolumeRef, options?: CallOptions): Promise<AttachmentRecord[]> {
    const res = await this.#call(this.#volumes.listAttachments, this.#volumes, request, options, true);
    return res.attachments.map(attachmentRecordFromWire);
  }

  /**
   * Waits until the volume's attachment on the node called is in `state`
   * (polling GetAttachment); resolves with it. DEADLINE_EXCEEDED after
   * `timeoutMs`; other errors (VOLUME_NOT_FOUND: not attached there) at once.
   *
   * @example
   * await client.attachVolume({ name: "pg-data" });
   * const att = await client.waitFor("pg-data", "healthy", { timeoutMs: 120_000 });
   */
  async waitFor(volume: string, state: Attachment["state"], options: WaitForOptions = {}): Promise<Attachment> {
    const { timeoutMs = 60_000, intervalMs = 200, signal } = options;
    const deadline = Date.now() + timeoutMs;
    let last: Attachment | null = null;
    for (;;) {
      last = await this.getAttachment({ name: volume }, { signal });
      if (last.state === state) return last;
      if (Date.now() + intervalMs > deadline) {
        throw new KeelsonError({
          code: "DEADLINE_EXCEEDED",
          message: `volume ${volume} did not become ${state} in ${timeoutMs} ms (it is ${last.state})`,
        });
      }
      await sleep(intervalMs, signal);
    }
  }

  /**
   * Creates a volume and attaches it (idempotent, like both calls); resolves
   * with both. Only a cluster volume (`replicas` > 1 or `replicated`) is
   * attached, and it needs a cluster.
   *
   * @example
   * const { volume, attachment } = await client.createAndAttach({ name: "pg-data", sizeBytes: 2 ** 30, replicas: 3 });
   * console.log(attachment.export.nbdTcpUri);
   */
  async createAndAttach(
    request: CreateAndAttachRequest,
    options?: CallOptions,
  ): Promise<{ volume: Volume; attachment: Attachment }> {
    const { nodeId, readOnly, replicaTimeoutMs, ...create } = request;
    const volume = await this.createVolume(create, options);
    const attachment = await this.attachVolume(
      {
        name: request.name,
        ...(nodeId === undefined ? {} : { nodeId }),
        ...(readOnly === undefined ? {} : { readOnly }),
        ...(replicaTimeoutMs === undefined ? {} : { replicaTimeoutMs }),
      },
      options,
    );
    return { volume, attachment };
  }

  /**
   * Takes a snapshot and makes a writable clone of it (sharing its data):
   * the usual way to hand a copy of production data to a test. Idempotent,
   * like both calls.
   *
   * @example
   * const { clone } = await client.snapshotThenClone({ volume: "pg-data", snapshot: "for-ci", clone: "pg-ci" });
   */
  async snapshotThenClone(
    request: SnapshotThenCloneRequest,
    options?: CallOptions,
  ): Promise<{ snapshot: Snapshot; clone: Volume }> {
    const snapshot = await this.createSnapshot(
      { volume: request.volume, name: request.snapshot, ...(request.labels ? { labels: request.labels } : {}) },
      options,
    );
    const clone = await this.createVolume(
      {
        name: request.clone,
        sizeBytes: 0,
        source: { snapshot: { volume: request.volume, name: request.snapshot } },
        ...(request.labels ? { labels: request.labels } : {}),
      },
      options,
    );
    return { snapshot, clone };
  }

  /**
   * This node's attachment of a volume, with each replica's state. Idempotent.
   *
   * @example
   * const { state, replicas } = await client.getAttachment({ name: "pg-data" });
   */
  async getAttachment(request: VolumeRef, options?: CallOptions): Promise<Attachment> {
    return attachmentFromWire(await this.#call(this.#volumes.getAttachment, this.#volumes, request, options, true));
  }

  /**
   * The operator's decision after a disaster: the replica on `nodeId`
   * becomes the only one in sync of a replicated volume, and the others are
   * rebuilt from it at the next attach, whatever it lacks. Refused with
   * VOLUME_IN_USE while attached; UNAVAILABLE when that replica does not
   * answer. Recorded in the volume's record; watchers see a volume event.
   *
   * @example
   * await client.declareInSync({ name: "pg-data", nodeId: "node2", reason: "node1's disk was lost" });
   */
  async declareInSync(request: DeclareInSyncRequest, options?: CallOptions): Promise<Volume> {
    return volumeFromWire(await this.#call(this.#volumes.declareInSync, this.#volumes, request, options, false));
  }

  /**
   * Fences a replica at an attachment epoch: NBD I/O opened under an older
   * epoch (export `VOLUME#EPOCH`) is refused with EPOCH_STALE from now on.
   * Idempotent for the current epoch; an older epoch fails with EPOCH_STALE.
   *
   * @example
   * await client.fenceVolume({ name: "pg-data", epoch: 7 });
   */
  async fenceVolume(request: FenceVolumeRequest, options?: CallOptions): Promise<Volume> {
    return volumeFromWire(await this.#call(this.#volumes.fenceVolume, this.#volumes, request, options, true));
  }

  /**
   * Sets the disk's capability by hand, or measures it again (`recalibrate`).
   * Reservations already admitted stay. Idempotent.
   *
   * @example
   * await client.setDiskCapability({ iops: 20000, bytesPerSec: 500 * 2 ** 20 });
   */
  async setDiskCapability(request: SetDiskCapabilityRequest, options?: CallOptions): Promise<NodeInfo> {
    const wire = {
      recalibrate: request.recalibrate ?? false,
      iops: request.iops ?? 0,
      bytesPerSec: request.bytesPerSec ?? 0,
      headroom: request.headroom ?? 0,
    };
    return nodeFromWire(await this.#call(this.#node.setDiskCapability, this.#node, wire, options, true));
  }

  /**
   * Takes a crash-consistent snapshot in O(1): every write completed before
   * the call returns is in it, no write is partly in it. Idempotent by
   * (volume, name): other labels fail with ALREADY_EXISTS.
   *
   * @example
   * const snap = await client.createSnapshot({ volume: "pg-data", name: "nightly" });
   * console.log(snap.export.nbdTcpUri); // read-only nbd://host:port/pg-data@nightly
   */
  async createSnapshot(request: CreateSnapshotRequest, options?: CallOptions): Promise<Snapshot> {
    const wire = {
      volume: request.volume,
      name: request.name,
      labels: request.labels ?? {},
      replicaOnly: request.replicaOnly ?? false,
    };
    return snapshotFromWire(await this.#call(this.#snapshots.createSnapshot, this.#snapshots, wire, options, true));
  }

  /**
   * Returns one snapshot; SNAPSHOT_NOT_FOUND when it does not exist. Idempotent.
   *
   * @example
   * const { allocatedBytes } = await client.getSnapshot({ volume: "pg-data", name: "nightly" });
   */
  async getSnapshot(request: SnapshotRef, options?: CallOptions): Promise<Snapshot> {
    return snapshotFromWire(await this.#call(this.#snapshots.getSnapshot, this.#snapshots, request, options, true));
  }

  /**
   * Lists snapshots (of one volume, or all), ordered by export name. Idempotent.
   *
   * @example
   * for (const s of await client.listSnapshots({ volume: "pg-data" })) console.log(s.name, s.createdAt);
   */
  async listSnapshots(request: ListSnapshotsRequest = {}, options?: CallOptions): Promise<Snapshot[]> {
    const wire = { volume: request.volume ?? "" };
    const res = await this.#call(this.#snapshots.listSnapshots, this.#snapshots, wire, options, true);
    return res.snapshots.map(snapshotFromWire);
  }

  /**
   * Deletes a snapshot; its data is folded into the next layer while I/O
   * continues. Not retried (a retry after a lost reply would report
   * SNAPSHOT_NOT_FOUND). VOLUME_IN_USE while its export has connections.
   *
   * @example
   * const { freedBytes } = await client.deleteSnapshot({ volume: "pg-data", name: "nightly" });
   */
  async deleteSnapshot(request: DeleteSnapshotRequest, options?: CallOptions): Promise<DeleteVolumeResult> {
    const wire = { volume: request.volume, name: request.name, replicaOnly: request.replicaOnly ?? false };
    return await this.#call(this.#snapshots.deleteSnapshot, this.#snapshots, wire, options, false);
  }

  /**
   * The extents of a snapshot (or of the volume's head) on this engine's own
   * pool that may differ from an older snapshot of the same chain, from the
   * layers' allocation maps: what an incremental copy of it needs.
   * Idempotent. SNAPSHOT_NOT_FOUND / VOLUME_NOT_FOUND when either is absent
   * here; INVALID_ARGUMENT when the base is not older in the same chain.
   *
   * @example
   * const { extents, extentBytes } = await client.getSnapshotChanges({ volume: "pg-data", name: "nightly", baseSnapshot: "weekly" });
   */
  async getSnapshotChanges(request: GetSnapshotChangesRequest, options?: CallOptions): Promise<SnapshotChanges> {
    const wire = { volume: request.volume, name: request.name ?? "", baseSnapshot: request.baseSnapshot ?? "" };
    const res = await this.#call(this.#snapshots.getSnapshotChanges, this.#snapshots, wire, options, true);
    return {
      extentBytes: res.extentBytes,
      sizeBytes: res.sizeBytes,
      extents: extentsFromBitmap(res.extents, res.sizeBytes, res.extentBytes),
    };
  }

  /**
   * Returns the engine's identity, pool space and NBD endpoints. Idempotent.
   *
   * @example
   * const { pool } = await client.getNode();
   * console.log(`${pool.freeBytes} of ${pool.totalBytes} bytes free`);
   */
  async getNode(options?: CallOptions): Promise<NodeInfo> {
    return nodeFromWire(await this.#call(this.#node.getNode, this.#node, {}, options, true));
  }

  /**
   * Lists the cluster's nodes with liveness and leadership (from etcd); a
   * single engine without etcd lists itself. Idempotent.
   *
   * @example
   * const leader = (await client.listNodes()).find((n) => n.leader);
   */
  async listNodes(options?: CallOptions): Promise<ClusterNode[]> {
    const res = await this.#call(this.#node.listNodes, this.#node, {}, options, true);
    return res.nodes.map(clusterNodeFromWire);
  }

  /** Closes the channels. Idempotent; calls after close fail with UNAVAILABLE. */
  /**
   * Watches the cluster's changes (volumes, attachments, snapshots, nodes,
   * volume state and rebuild progress) as an async iterable, in the order
   * etcd recorded them. When the engine's endpoint goes away the watch
   * reconnects (backoff with jitter, until `signal` aborts) and resumes after
   * the last event it yielded: no event is lost or repeated. Pass an event's
   * `cursor` as `after` to resume a watch later. Ends with WATCH_COMPACTED
   * when etcd no longer keeps the history after the cursor.
   *
   * @example
   * const ac = new AbortController();
   * for await (const e of client.watch({ volume: "pg-data", signal: ac.signal })) {
   *   if (e.kind === "status") console.log(e.state, e.replicas.map((r) => `${r.nodeId}:${r.state}`));
   * }
   */
  async *watch(options: WatchOptions = {}): AsyncGenerator<KeelsonEvent, void, undefined> {
    const { signal } = options;
    let cursor: EventCursor | undefined = options.after;
    let failures = 0;
    while (!signal?.aborted) {
      if (this.#closed) throw new KeelsonError({ code: "UNAVAILABLE", message: "client is closed" });
      const call = this.#events.watch({
        afterRevision: cursor?.revision ?? 0,
        afterIndex: cursor?.index ?? 0,
        volume: options.volume ?? "",
      });
      const onAbort = (): void => call.cancel();
      signal?.addEventListener("abort", onAbort, { once: true });
      try {
        for await (const wire of call) {
          failures = 0;
          const event = eventFromWire(wire);
          cursor = { revision: wire.revision, index: wire.index };
          if (event) yield event;
        }
      } catch (error) {
        if (signal?.aborted) return;
        const e = fromServiceError(error as ServiceError);
        if (!e.retryable) throw e;
      } finally {
        signal?.removeEventListener("abort", onAbort);
        call.cancel();
      }
      failures++;
      await sleep(Math.max(50, backoffDelayMs(failures, this.#retryBaseDelayMs)), signal).catch(() => undefined);
    }
  }

  /**
   * Closes the client's channels; later calls fail with UNAVAILABLE. Idempotent.
   *
   * @example
   * const client = createClient({ address: "127.0.0.1:7420" });
   * try { await client.getNode(); } finally { client.close(); }
   */
  close(): void {
    if (this.#closed) return;
    this.#closed = true;
    this.#volumes.close();
    this.#snapshots.close();
    this.#node.close();
    this.#events.close();
  }

  async [Symbol.asyncDispose](): Promise<void> {
    this.close();
  }

  async #call<Req, Res>(
    method: Unary<Req, Res>,
    target: object,
    request: Req,
    options: CallOptions | undefined,
    idempotent: boolean,
  ): Promise<Res> {
    const attempts = idempotent ? this.#maxAttempts : 1;
    const timeoutMs = options?.timeoutMs ?? this.#timeoutMs;
    const deadline = Date.now() + timeoutMs;
    for (let attempt = 1; ; attempt++) {
      try {
        return await this.#attempt(method, target, request, deadline, options?.signal);
      } catch (error) {
        const last = attempt >= attempts || !(error instanceof KeelsonError) || !error.retryable;
        const delayMs = backoffDelayMs(attempt, this.#retryBaseDelayMs);
        if (last || Date.now() + delayMs >= deadline) throw error;
        await sleep(delayMs, options?.signal);
      }
    }
  }

  #attempt<Req, Res>(
    method: Unary<Req, Res>,
    target: object,
    request: Req,
    deadline: number,
    signal: AbortSignal | undefined,
  ): Promise<Res> {
    if (this.#closed) return Promise.reject(new KeelsonError({ code: "UNAVAILABLE", message: "client is closed" }));
    if (signal?.aborted) return Promise.reject(cancelled(signal));
    return new Promise<Res>((resolve, reject) => {
      const call = method.call(target, request, new Metadata(), { deadline }, (error, response) => {
        signal?.removeEventListener("abort", onAbort);
        if (error) reject(signal?.aborted ? cancelled(signal) : fromServiceError(error));
        else resolve(response);
      });
      const onAbort = (): void => call.cancel();
      signal?.addEventListener("abort", onAbort, { once: true });
    });
  }
}

/**
 * Connects to one engine's control API. Connecting is lazy: the first call
 * opens the channel, and an unreachable engine surfaces as UNAVAILABLE.
 *
 * @example
 * await using client = createClient({ address: "127.0.0.1:7420" });
 * const vol = await client.createVolume({ name: "pg-data", sizeBytes: 2 ** 30 });
 */
export function createClient(options: ClientOptions): KeelsonClient {
  return new KeelsonClient(options);
}

/**
 * Exponential backoff with full jitter: uniform in [0, min(max, base * 2^(attempt-1))].
 *
 * @example
 * await new Promise((r) => setTimeout(r, backoffDelayMs(attempt, 100)));
 */
export function backoffDelayMs(attempt: number, baseDelayMs: number, random: () => number = Math.random): number {
  const cap = Math.min(MAX_RETRY_DELAY_MS, baseDelayMs * 2 ** (attempt - 1));
  return Math.floor(random() * cap);
}

function cancelled(signal: AbortSignal): KeelsonError {
  return new KeelsonError({ code: "CANCELLED", message: "call cancelled by its AbortSignal", cause: signal.reason });
}

function sleep(ms: number, signal: AbortSignal | undefined): Promise<void> {
  return new Promise((resolve, reject) => {
    if (signal?.aborted) return reject(cancelled(signal));
    const timer = setTimeout(() => {
      signal?.removeEventListener("abort", onAbort);
      resolve();
    }, ms);
    const onAbort = (): void => {
      clearTimeout(timer);
      reject(cancelled(signal as AbortSignal));
    };
    signal?.addEventListener("abort", onAbort, { once: true });
  });
}
