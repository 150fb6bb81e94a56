// The `local` target: a keelson cluster on this host (`keelson up`'s harness):
// etcd and one keelsond per node, each in its own network namespace with a
// loop-device disk as root, or on 127.0.0.x with plain files otherwise.

import fs from "node:fs";
import path from "node:path";
import { LocalCluster, type StartedLocalCluster } from "@keelson/engine";
import type { KeelsonClient } from "@keelson/sdk";
import { ConformanceError, messageOf } from "../errors.js";
import { mountFilesystem, nbdBlockDevice } from "../host/block-device.js";
import { CleanupStack } from "../host/cleanup.js";
import { hasTool } from "../testing/env.js";
import { keelsonCall, keelsonCallRetrying } from "./keelson-errors.js";
import { toKeelsonPolicy } from "./qos-mapping.js";
import type {
  AccessMode,
  AttachedVolume,
  AttachRequest,
  Capability,
  DataPath,
  ProvisionedVolume,
  ProvisionRequest,
  QosSpec,
  SnapshotId,
  Target,
  TargetFaults,
  VolumeHealth,
} from "./target.js";

/** How long a replica may keep a write waiting before the frontend faults it. */
const REPLICA_TIMEOUT_MS = 1_000;
/** Seconds of each node's liveness lease: failover waits this long at most to see a node gone. */
const LEASE_TTL_S = 2;
const NODE_ALIVE_TIMEOUT_MS = 30_000;
/** Lines of each log a failed restore quotes. */
const RESTORE_LOG_LINES = 25;

/** Options of {@link startLocalTarget}. */
export interface LocalTargetOptions {
  nodes: number;
  /** Where pools, logs and mounts go (created; removed by close()). */
  dir: string;
  /** Default: netns as root, else loopback. */
  isolation?: "netns" | "loopback";
  /** Each node's disk (sparse). Default 2 GiB. */
  diskSizeBytes?: number;
}

interface VolumeInfo {
  replicas: number;
  sizeBytes: number;
  /** Node index holding a single-replica volume (keelson keeps those on the node that made them). */
  holder: number;
}

/** Node states the target changed, so `restore` knows what to undo. */
interface NodeFaults {
  killed: boolean;
  partitioned: boolean;
}

/** Starts a local cluster and wraps it as a Target. */
export async function startLocalTarget(options: LocalTargetOptions): Promise<Target> {
  fs.mkdirSync(options.dir, { recursive: true });
  const cluster = await LocalCluster.start({
    nodes: options.nodes,
    dir: path.join(options.dir, "cluster"),
    diskSizeBytes: options.diskSizeBytes ?? 2 * 1024 ** 3,
    leaseTtlS: LEASE_TTL_S,
    // Reservations are admitted against what each node's disk does, measured at its first start.
    calibrate: true,
    // The daemons get process groups of their own: a terminal's Ctrl-C reaches the suite, which stops them in order.
    detached: true,
    ...(options.isolation ? { isolation: options.isolation } : {}),
  });
  return new LocalTarget(cluster, options.dir);
}

class LocalTarget implements Target {
  readonly kind = "local";
  readonly description: Readonly<Record<string, string>>;
  readonly capabilities: ReadonlySet<Capability>;
  readonly faults: TargetFaults;
  readonly #cluster: StartedLocalCluster;
  readonly #dir: string;
  readonly #cleanup = new CleanupStack();
  readonly #volumes = new Map<string, VolumeInfo>();
  readonly #nodeFaults: NodeFaults[];
  readonly #clients: KeelsonClient[];
  #closed = false;

  constructor(cluster: StartedLocalCluster, dir: string) {
    this.#cluster = cluster;
    this.#dir = dir;
    this.#clients = cluster.nodes.map((_, i) => cluster.client(i));
    this.#nodeFaults = cluster.nodes.map(() => ({ killed: false, partitioned: false }));
    const netns = cluster.state.isolation === "netns";
    const caps: Capability[] = ["qos-limits", "qos-reservations", "snapshots", "clones", "revert", "expand"];
    if (cluster.nodes.length >= 2) caps.push("replication", "read-replicas");
    caps.push("fault-kill-storage-process", "fault-kill-serving-node");
    if (netns) caps.push("fault-partition-node");
    if (process.getuid?.() === 0 && hasTool("nbdfuse")) caps.push("block", "filesystem");
    this.capabilities = new Set(caps);
    this.description = {
      storage: "keelson",
      nodes: String(cluster.nodes.length),
      isolation: cluster.state.isolation,
      disks: netns ? "loop devices over sparse files" : "sparse files",
    };
    this.faults = {
      killStorageProcess: (nodeId) => this.#killStorageProcess(nodeId),
      killServingNode: (volume) => this.#killServingNode(volume),
      partition: (nodeId) => this.#partition(nodeId),
      slowDisk: async () => {
        throw new ConformanceError({ code: "NOT_SUPPORTED", message: "local target: slowing a disk needs device-mapper" });
      },
      restore: (nodeId) => this.#restore(nodeId),
    };
  }

  nodeIds(): readonly string[] {
    return this.#cluster.nodes.map((n) => n.nodeId);
  }

  #index(nodeId: string): number {
    const i = this.#cluster.nodes.findIndex((n) => n.nodeId === nodeId);
    if (i < 0)
      throw new ConformanceError({ code: "NOT_FOUND", message: `no node ${nodeId}; nodes: ${this.nodeIds().join(", ")}` });
    return i;
  }

  #up(i: number): boolean {
    const f = this.#nodeFaults[i] as NodeFaults;
    return !f.killed && !f.partitioned;
  }

  /** A client of a node that is up (node 1 first). */
  #anyClient(): KeelsonClient {
    const i = this.#cluster.nodes.findIndex((_, k) => this.#up(k));
    if (i < 0) throw new ConformanceError({ code: "TARGET_FAILED", message: "local target: every node is down" });
    return this.#clients[i] as KeelsonClient;
  }

  #volume(name: string): VolumeInfo {
    const v = this.#volumes.get(name);
    if (!v) throw new ConformanceError({ code: "NOT_FOUND", message: `local target: no volume ${name} made in this run` });
    return v;
  }

  #socketUri(exportName: string, nodeIndex: number): string {
    const socket = (this.#cluster.nodes[nodeIndex] as { nbdSocket: string }).nbdSocket;
    return `nbd+unix:///${encodeURIComponent(exportName)}?socket=${socket}`;
  }

  async provision(request: ProvisionRequest): Promise<ProvisionedVolume> {
    const source = request.source;
    // Clones live where their source does; single-replica volumes on node 1, so QoS checks share one disk.
    const holder = source ? this.#volume("snapshot" in source ? source.snapshot.volume : source.volume).holder : 0;
    const client = request.replicas > 1 ? this.#anyClient() : (this.#clients[holder] as KeelsonClient);
    const v = await keelsonCallRetrying(`create volume ${request.name}`, () =>
      client.createVolume({
        name: request.name,
        sizeBytes: request.sizeBytes,
        replicas: request.replicas,
        ...(request.qos ? { qos: toKeelsonPolicy(request.qos) } : {}),
        ...(request.qosClass ? { qosClass: request.qosClass } : {}),
        ...(source ? { source: "snapshot" in source ? { snapshot: source.snapshot } : { volume: source.volume } } : {}),
      }),
    );
    this.#volumes.set(request.name, { replicas: request.replicas, sizeBytes: v.sizeBytes, holder });
    return { name: request.name, sizeBytes: v.sizeBytes, replicas: request.replicas };
  }

  async setQos(volume: string, qos: QosSpec): Promise<void> {
    const v = this.#volume(volume);
    await keelsonCall(`set QoS of ${volume}`, () =>
      (this.#clients[v.holder] as KeelsonClient).setVolumeQos({ name: volume, qos: toKeelsonPolicy(qos) }),
    );
  }

  async attach(request: AttachRequest): Promise<AttachedVolume> {
    const v = this.#volume(request.volume);
    let nodeIndex = v.holder;
    let undoAttach: (() => Promise<void>) | null = null;
    if (v.replicas > 1) {
      nodeIndex = request.nodeId ? this.#index(request.nodeId) : (this.#cluster.nodes.findIndex((_, k) => this.#up(k)) ?? 0);
      const nodeId = this.#cluster.nodes[nodeIndex]?.nodeId as string;
      // Retried while keelson says UNAVAILABLE, as Kubernetes' attacher retries: a node whose liveness
      // lease blinked under load is back within seconds, and an attach is idempotent. A takeover is
      // not: the ha checks retry it themselves, and time it.
      const call = request.takeover ? keelsonCall : keelsonCallRetrying;
      await call(`attach ${request.volume} on ${nodeId}`, () =>
        this.#anyClient().attachVolume(
          {
            name: request.volume,
            nodeId,
            replicaTimeoutMs: REPLICA_TIMEOUT_MS,
            ...(request.readOnly ? { readOnly: true } : {}),
            ...(request.takeover ? { takeover: true } : {}),
          },
          { timeoutMs: 120_000 },
        ),
      );
      undoAttach = async () => {
        // A node that is down is detached through another (its writer is fenced first).
        await keelsonCall(`detach ${request.volume} from ${nodeId}`, () =>
          this.#anyClient().detachVolume({ name: request.volume, nodeId, force: true }, { timeoutMs: 60_000 }),
        );
      };
    } else if (request.nodeId && request.nodeId !== this.#cluster.nodes[v.holder]?.nodeId) {
      throw new ConformanceError({
        code: "NOT_SUPPORTED",
        message: `local target: a single-replica volume is served by its node (${this.#cluster.nodes[v.holder]?.nodeId}), not ${request.nodeId}`,
      });
    }
    const uri = this.#socketUri(request.volume, nodeIndex);
    return this.#expose(
      request.volume,
      nodeIndex,
      uri,
      request.mode ?? "nbd",
      request.fsType ?? "ext4",
      !!request.readOnly,
      undoAttach,
    );
  }

  async attachSnapshot(snapshot: SnapshotId, mode: AccessMode = "nbd"): Promise<AttachedVolume> {
    const v = this.#volume(snapshot.volume);
    let nodeIndex = v.holder;
    if (v.replicas > 1) {
      const s = await keelsonCall(`get snapshot ${snapshot.volume}@${snapshot.name}`, () =>
        this.#anyClient().getSnapshot(snapshot),
      );
      const holder = s.holders.map((h) => this.#index(h)).find((k) => this.#up(k));
      if (holder === undefined) {
        throw new ConformanceError({ code: "TARGET_FAILED", message: `no holder of ${snapshot.volume}@${snapshot.name} is up` });
      }
      nodeIndex = holder;
    }
    const uri = this.#socketUri(`${snapshot.volume}@${snapshot.name}`, nodeIndex);
    return this.#expose(`${snapshot.volume}@${snapshot.name}`, nodeIndex, uri, mode, "ext4", true, null);
  }

  /** Hands out the export as NBD, a block device or a mounted filesystem; detach undoes it all. */
  async #expose(
    volume: string,
    nodeIndex: number,
    uri: string,
    mode: AccessMode,
    fsType: "ext4" | "xfs",
    readOnly: boolean,
    undoAttach: (() => Promise<void>) | null,
  ): Promise<AttachedVolume> {
    const own = new CleanupStack();
    if (undoAttach) own.push(`attachment of ${volume}`, undoAttach);
    const release = this.#cleanup.push(`attachment of ${volume}`, async () => {
      const failed = await own.run();
      if (failed.length > 0) throw new Error(failed.join("; "));
    });
    let dataPath: DataPath = { kind: "nbd", uri };
    try {
      if (mode !== "nbd") {
        this.#need(mode, `attach ${volume} as ${mode}`);
        const workDir = fs.mkdtempSync(path.join(this.#dir, "attach-"));
        own.push(`rm ${workDir}`, async () => fs.rmSync(workDir, { recursive: true, force: true }));
        const devicePath = await nbdBlockDevice(uri, workDir, own, readOnly);
        dataPath = { kind: "block", devicePath };
        if (mode === "filesystem") {
          dataPath = { kind: "filesystem", mountPath: await mountFilesystem(devicePath, fsType, workDir, own, readOnly), fsType };
        }
      }
    } catch (error) {
      await release().catch(() => undefined);
      throw error;
    }
    return { volume, nodeId: this.#cluster.nodes[nodeIndex]?.nodeId as string, dataPath, detach: release };
  }

  #need(capability: Capability, what: string): void {
    if (!this.capabilities.has(capability)) {
      throw new ConformanceError({ code: "NOT_SUPPORTED", message: `local target cannot ${what}: no ${capability} here` });
    }
  }

  /** The client that serves calls about a volume: its holder, or any node that is up for a replicated one. */
  #clientFor(volume: string): KeelsonClient {
    const v = this.#volume(volume);
    return v.replicas > 1 ? this.#anyClient() : (this.#clients[v.holder] as KeelsonClient);
  }

  async snapshot(snapshot: SnapshotId): Promise<void> {
    await keelsonCall(`snapshot ${snapshot.volume}@${snapshot.name}`, () =>
      this.#clientFor(snapshot.volume).createSnapshot({ volume: snapshot.volume, name: snapshot.name }, { timeoutMs: 60_000 }),
    );
  }

  async deleteSnapshot(snapshot: SnapshotId): Promise<void> {
    await keelsonCall(`delete snapshot ${snapshot.volume}@${snapshot.name}`, () =>
      this.#clientFor(snapshot.volume).deleteSnapshot(snapshot, { timeoutMs: 60_000 }),
    );
  }

  async revert(snapshot: SnapshotId): Promise<void> {
    await keelsonCall(`revert ${snapshot.volume} to ${snapshot.name}`, () =>
      this.#clientFor(snapshot.volume).revertVolume({ name: snapshot.volume, snapshot: snapshot.name }),
    );
  }

  async expand(volume: string, sizeBytes: number): Promise<void> {
    await keelsonCall(`expand ${volume}`, () => this.#clientFor(volume).resizeVolume({ name: volume, sizeBytes }));
    this.#volume(volume).sizeBytes = sizeBytes;
  }

  async deleteVolume(volume: string): Promise<void> {
    const v = this.#volume(volume);
    if (v.replicas > 1) {
      // Through any node: every replica and the cluster record go (a node that is down loses its copy once back).
      await keelsonCall(`delete volume ${volume}`, () => this.#anyClient().deleteVolume({ name: volume, force: true })).catch(
        (error: ConformanceError) => {
          if (error.code !== "NOT_FOUND") throw error;
        },
      );
    } else {
      await keelsonCall(`delete volume ${volume}`, () =>
        (this.#clients[v.holder] as KeelsonClient).deleteVolume({ name: volume, force: true }),
      );
    }
    this.#volumes.delete(volume);
  }

  async health(volume: string): Promise<VolumeHealth> {
    const v = this.#volume(volume);
    if (v.replicas <= 1) {
      const got = await keelsonCall(`get volume ${volume}`, () =>
        (this.#clients[v.holder] as KeelsonClient).getVolume({ name: volume }),
      );
      const nodeId = this.#cluster.nodes[v.holder]?.nodeId as string;
      const state = got.state === "unknown" ? "unknown" : got.state;
      return { state, servingNode: nodeId, replicas: [{ nodeId, state: state === "healthy" ? "healthy" : "unknown" }] };
    }
    const records = await keelsonCall(`attachments of ${volume}`, () => this.#anyClient().listAttachments({ name: volume }));
    const writer = records.find((r) => !r.readOnly);
    if (!writer) return { state: "detached", servingNode: "", replicas: [] };
    const i = this.#index(writer.nodeId);
    if (!this.#up(i)) return { state: "faulted", servingNode: writer.nodeId, replicas: [] };
    const a = await keelsonCall(`attachment of ${volume}`, () =>
      (this.#clients[i] as KeelsonClient).getAttachment({ name: volume }),
    );
    const last = a.replicas
      .map((r) => r.lastRebuild)
      .filter((r) => r !== undefined)
      .at(-1);
    return {
      state: a.state,
      servingNode: a.nodeId,
      replicas: a.replicas.map((r) => ({ nodeId: r.nodeId, state: r.state })),
      ...(last ? { lastRebuild: { bytes: last.bytes, durationMs: last.durationMs } } : {}),
    };
  }

  async replicaPaths(volume: string): Promise<{ nodeId: string; dataPath: DataPath }[]> {
    const v = this.#volume(volume);
    if (v.replicas <= 1) {
      return [
        {
          nodeId: this.#cluster.nodes[v.holder]?.nodeId as string,
          dataPath: { kind: "nbd", uri: this.#socketUri(volume, v.holder) },
        },
      ];
    }
    const records = await keelsonCall(`attachments of ${volume}`, () => this.#anyClient().listAttachments({ name: volume }));
    const epoch = Math.max(0, ...records.map((r) => r.epoch));
    const out: { nodeId: string; dataPath: DataPath }[] = [];
    for (const [i, node] of this.#cluster.nodes.entries()) {
      if (!this.#up(i)) continue;
      const has = await keelsonCall(`replica of ${volume} on ${node.nodeId}`, () =>
        (this.#clients[i] as KeelsonClient).getVolume({ name: volume }),
      ).then(
        // A node without a replica reports the volume from its cluster record, with no local uid.
        (got) => (got.uid === "" ? -1 : got.epoch),
        () => -1,
      );
      if (has < 0) continue;
      // A replica is read through its epoch-qualified export (`VOLUME#EPOCH`), as the frontend reaches it.
      out.push({ nodeId: node.nodeId, dataPath: { kind: "nbd", uri: this.#socketUri(`${volume}#${epoch || has}`, i) } });
    }
    return out;
  }

  async #killStorageProcess(nodeId: string): Promise<void> {
    const i = this.#index(nodeId);
    await this.#cluster.kill9(i);
    (this.#nodeFaults[i] as NodeFaults).killed = true;
  }

  async #killServingNode(volume: string): Promise<string> {
    const health = await this.health(volume);
    if (!health.servingNode) throw new ConformanceError({ code: "TARGET_FAILED", message: `${volume} is attached nowhere` });
    const i = this.#index(health.servingNode);
    // A node dies whole: its storage process, its kernel's connections (nothing it queued is
    // delivered after the restore) and its network. On loopback only the process can die.
    const whole = this.capabilities.has("fault-partition-node");
    await (whole ? this.#cluster.powerOff(i) : this.#cluster.kill9(i));
    (this.#nodeFaults[i] as NodeFaults).killed = true;
    if (whole) await this.#partition(health.servingNode);
    return health.servingNode;
  }

  async #partition(nodeId: string): Promise<void> {
    const i = this.#index(nodeId);
    await this.#cluster.partition(i);
    (this.#nodeFaults[i] as NodeFaults).partitioned = true;
  }

  async #restore(nodeId: string): Promise<void> {
    const i = this.#index(nodeId);
    const f = this.#nodeFaults[i] as NodeFaults;
    try {
      if (f.partitioned) {
        await this.#cluster.heal(i);
        f.partitioned = false;
      }
      if (f.killed) {
        await this.#cluster.startNode(i);
        f.killed = false;
      }
      await this.#cluster.waitUntilAllAlive(NODE_ALIVE_TIMEOUT_MS);
    } catch (error) {
      // The logs say why a node did not come back; a run in CI shows nothing else.
      throw new ConformanceError({
        code: "TARGET_FAILED",
        message: `restoring ${nodeId}: ${messageOf(error)}\n${this.#cluster.logTails(RESTORE_LOG_LINES)}`,
        cause: error,
      });
    }
  }

  async collectLogs(dir: string): Promise<string[]> {
    fs.mkdirSync(dir, { recursive: true });
    const files = [this.#cluster.state.etcd.logFile, ...this.#cluster.nodes.map((n) => n.logFile)];
    const written: string[] = [];
    for (const f of files) {
      if (!fs.existsSync(f)) continue;
      const to = path.join(dir, path.basename(f));
      fs.copyFileSync(f, to);
      written.push(to);
    }
    return written;
  }

  async close(): Promise<void> {
    if (this.#closed) return;
    this.#closed = true;
    const failed = await this.#cleanup.run();
    await this.#cluster.stop().catch((e: Error) => failed.push(e.message));
    fs.rmSync(this.#dir, { recursive: true, force: true });
    if (failed.length > 0) {
      throw new ConformanceError({ code: "TARGET_FAILED", message: `local target teardown left: ${failed.join("; ")}` });
    }
  }

  async [Symbol.asyncDispose](): Promise<void> {
    await this.close();
  }
}
