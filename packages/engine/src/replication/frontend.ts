import { KeelsonError } from "@keelson/sdk";
import createDebug from "debug";
import type { ExportCallback, NbdExport } from "../nbd/export.js";
import { ReplicaClient } from "./replica-client.js";

const debug = createDebug("keelson:replication");

/** Per-request deadline of a replica unless configured: after it, the replica is faulted and I/O goes on without it. */
export const DEFAULT_REPLICA_TIMEOUT_MS = 2_000;

/** Where one replica of a volume lives. */
export interface ReplicaTarget {
  nodeId: string;
  /** NBD `host:port` of the replica's node. */
  nbdAddress: string;
}

/** One replica as the frontend sees it. */
export interface ReplicaStatus {
  nodeId: string;
  state: "healthy" | "faulted";
  /** Why it was faulted, and when. */
  reason: string;
  faultedAtMs: number;
}

interface Replica extends ReplicaStatus {
  target: ReplicaTarget;
  client: ReplicaClient | null;
}

/**
 * The frontend of a replicated volume attached on this node: every write goes
 * to every healthy replica and is acknowledged once all of them acknowledged
 * it; a replica that fails or misses its deadline is faulted and the volume
 * runs degraded on the rest. Reads go to the local replica while it is
 * healthy. All replica connections carry this attachment's epoch, so once a
 * newer attachment fences the replicas nothing more is acknowledged here.
 */
export class ReplicatedVolume {
  readonly name: string;
  readonly epoch: number;
  readonly sizeBytes: number;
  readonly #localNodeId: string;
  readonly #replicas: Replica[];
  /** Records a replica out of sync (in etcd) before any write it missed is acknowledged. */
  readonly #recordFault: (nodeId: string) => Promise<void>;
  /** Longest time a write waited on a replica that then faulted (ms): the stall a replica loss causes. */
  maxStallMs = 0;
  #closed = false;
  /** Faulted replicas not yet recorded out of sync in etcd; nothing is acknowledged while any is. */
  readonly #unrecorded = new Set<string>();
  /** Set once etcd said a newer attachment exists: this frontend serves nothing more. */
  #fenced = false;

  private constructor(
    name: string,
    epoch: number,
    sizeBytes: number,
    localNodeId: string,
    replicas: Replica[],
    recordFault: (nodeId: string) => Promise<void>,
  ) {
    this.#recordFault = recordFault;
    this.name = name;
    this.epoch = epoch;
    this.sizeBytes = sizeBytes;
    this.#localNodeId = localNodeId;
    this.#replicas = replicas;
  }

  /** Connects to every replica under `epoch`; unreachable ones start faulted. UNAVAILABLE when none answers. */
  static async open(
    name: string,
    epoch: number,
    targets: readonly ReplicaTarget[],
    localNodeId: string,
    timeoutMs: number = DEFAULT_REPLICA_TIMEOUT_MS,
    recordFault: (nodeId: string) => Promise<void> = async () => undefined,
  ): Promise<ReplicatedVolume> {
    const replicas = await Promise.all(
      targets.map(async (target): Promise<Replica> => {
        try {
          const client = await ReplicaClient.connect(target.nbdAddress, `${name}#${epoch}`, timeoutMs);
          return { target, client, nodeId: target.nodeId, state: "healthy", reason: "", faultedAtMs: 0 };
        } catch (error) {
          const reason = `unreachable at attach: ${(error as Error).message}`;
          return { target, client: null, nodeId: target.nodeId, state: "faulted", reason, faultedAtMs: Date.now() };
        }
      }),
    );
    const healthy = replicas.filter((r) => r.client);
    if (healthy.length === 0) {
      throw new KeelsonError({
        code: "UNAVAILABLE",
        message: `no replica of ${name} answers: ${replicas.map((r) => r.reason).join("; ")}`,
      });
    }
    const sizeBytes = Math.min(...healthy.map((r) => (r.client as ReplicaClient).sizeBytes));
    return new ReplicatedVolume(name, epoch, sizeBytes, localNodeId, replicas, recordFault);
  }

  /** The replicas and their state now. */
  status(): ReplicaStatus[] {
    return this.#replicas.map(({ nodeId, state, reason, faultedAtMs }) => ({ nodeId, state, reason, faultedAtMs }));
  }

  #healthy(): Replica[] {
    return this.#replicas.filter((r) => r.state === "healthy");
  }

  #fault(r: Replica, error: unknown, waitedMs: number): void {
    if (r.state === "faulted") return;
    r.state = "faulted";
    r.reason = (error as Error).message ?? String(error);
    r.faultedAtMs = Date.now();
    r.client?.close();
    this.#unrecorded.add(r.nodeId);
    this.maxStallMs = Math.max(this.maxStallMs, waitedMs);
    debug("volume %s epoch %d: replica on %s faulted: %s", this.name, this.epoch, r.nodeId, r.reason);
  }

  /**
   * Records every faulted replica out of sync (in etcd, under this epoch).
   * Throws when that cannot be done, so the caller acknowledges nothing: a
   * frontend cut off from etcd must not keep acknowledging writes that only
   * its reachable replicas hold, because a newer attachment may exist.
   */
  async #recordFaults(): Promise<void> {
    for (const nodeId of [...this.#unrecorded]) {
      try {
        await this.#recordFault(nodeId);
        this.#unrecorded.delete(nodeId);
      } catch (error) {
        if (isStale(error)) this.#fenced = true;
        if (this.#fenced) throw fencedOut(this.name, this.epoch);
        throw new KeelsonError({
          code: "UNAVAILABLE",
          message: `volume ${this.name}: replica ${nodeId} faulted and cannot be recorded out of sync (${(error as Error).message}); not acknowledging`,
          cause: error,
        });
      }
    }
  }

  /** Runs `op` on every healthy replica; succeeds when at least one did and faults the rest. */
  async #everywhere(op: (c: ReplicaClient) => Promise<unknown>): Promise<void> {
    if (this.#fenced) throw fencedOut(this.name, this.epoch);
    const targets = this.#healthy();
    if (this.#closed || targets.length === 0) throw this.#unavailable();
    const started = Date.now();
    const results = await Promise.allSettled(targets.map((r) => op(r.client as ReplicaClient)));
    let ok = 0;
    let stale = false;
    results.forEach((res, i) => {
      if (res.status === "fulfilled") ok++;
      else {
        stale ||= isStale(res.reason);
        this.#fault(targets[i] as Replica, res.reason, Date.now() - started);
      }
    });
    if (stale) {
      this.#fenced = true;
      throw fencedOut(this.name, this.epoch);
    }
    if (ok === 0) throw this.#unavailable();
    // The replicas that missed this write leave the in-sync set before it is acknowledged.
    await this.#recordFaults();
  }

  #unavailable(): KeelsonError {
    return new KeelsonError({
      code: "UNAVAILABLE",
      message: `volume ${this.name}: no healthy replica left (epoch ${this.epoch})`,
    });
  }

  write(offset: number, data: Buffer, fua: boolean): Promise<void> {
    return this.#everywhere((c) => c.write(offset, data, fua));
  }

  zero(offset: number, length: number, trim: boolean, noHole: boolean, fua: boolean): Promise<void> {
    return this.#everywhere((c) => c.zero(offset, length, trim, noHole, fua));
  }

  flush(): Promise<void> {
    return this.#everywhere((c) => c.flush());
  }

  /** Reads from the local replica while healthy, else from the others in turn. */
  async read(offset: number, length: number): Promise<Buffer> {
    if (this.#fenced) throw fencedOut(this.name, this.epoch);
    const order = [...this.#healthy()].sort(
      (a, b) => Number(b.nodeId === this.#localNodeId) - Number(a.nodeId === this.#localNodeId),
    );
    for (const r of order) {
      const started = Date.now();
      try {
        return await (r.client as ReplicaClient).read(offset, length);
      } catch (error) {
        if (isStale(error)) {
          this.#fenced = true;
          throw fencedOut(this.name, this.epoch);
        }
        this.#fault(r, error, Date.now() - started);
      }
    }
    throw this.#unavailable();
  }

  /** Closes every replica connection. Idempotent. */
  close(): void {
    this.#closed = true;
    for (const r of this.#replicas) r.client?.close();
  }
}

function isStale(error: unknown): boolean {
  return error instanceof KeelsonError && error.code === "EPOCH_STALE";
}

function fencedOut(name: string, epoch: number): KeelsonError {
  return new KeelsonError({
    code: "EPOCH_STALE",
    message: `volume ${name}: attachment epoch ${epoch} was fenced by a newer attachment`,
  });
}

/** One NBD connection's handle on an attached replicated volume. */
export class FrontendExport implements NbdExport {
  readonly #volume: ReplicatedVolume;
  readonly readOnly = false;
  readonly description: string;

  constructor(volume: ReplicatedVolume) {
    this.#volume = volume;
    this.description = `keelson replicated volume ${volume.name} (epoch ${volume.epoch})`;
  }

  get name(): string {
    return this.#volume.name;
  }

  get sizeBytes(): number {
    return this.#volume.sizeBytes;
  }

  read(offset: number, length: number, buf: Buffer, bufOffset: number, cb: ExportCallback): void {
    this.#volume.read(offset, length).then(
      (data) => {
        data.copy(buf, bufOffset);
        cb(null);
      },
      (e: KeelsonError) => cb(e),
    );
  }

  write(offset: number, data: Buffer, fua: boolean, cb: ExportCallback): void {
    // No copy: each replica client copies the payload into its request before
    // this returns, and the connection's buffer stays ours until the callback.
    this.#volume.write(offset, data, fua).then(
      () => cb(null),
      (e: KeelsonError) => cb(e),
    );
  }

  zero(offset: number, length: number, options: { trim: boolean; noHole: boolean; fua: boolean }, cb: ExportCallback): void {
    this.#volume.zero(offset, length, options.trim, options.noHole, options.fua).then(
      () => cb(null),
      (e: KeelsonError) => cb(e),
    );
  }

  flush(cb: ExportCallback): void {
    this.#volume.flush().then(
      () => cb(null),
      (e: KeelsonError) => cb(e),
    );
  }

  close(): void {}
}
