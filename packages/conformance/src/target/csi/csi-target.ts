// The `csi` target: any CSI driver on this host, driven as kubelet and the sidecars drive it
// (CreateVolume, ControllerPublish, NodeStage, NodePublish; snapshots and clones through CSI), so a
// vendor can run the suite against their driver without Kubernetes. What CSI cannot express (killing
// or cutting a node, reading one replica) comes from the vendor's faults script, or is not applicable.

import { randomBytes } from "node:crypto";
import fs from "node:fs";
import path from "node:path";
import { status } from "@grpc/grpc-js";
import { ConformanceError } from "../../errors.js";
import { CleanupStack } from "../../host/cleanup.js";
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
} from "../target.js";
import { CsiCallError, CsiClient, type CsiReply, capabilityTypes } from "./csi-client.js";
import { FaultsScript } from "./faults-script.js";
import { capabilityFor, NodePublisher } from "./node-publication.js";

/** Options of {@link startCsiTarget}. */
export interface CsiTargetOptions {
  /** The driver's socket: `unix:///path/csi.sock` (controller and node services on one socket). */
  endpoint: string;
  /** StorageClass parameters passed to every CreateVolume. */
  parameters?: Readonly<Record<string, string>>;
  /** The vendor's faults script (see faults-script.ts); without it the fault checks are not applicable. */
  faultsScript?: string;
  /** Scratch directory: staging and publish paths live here (removed by close()). */
  dir: string;
}

/** How long a new snapshot may take to become ready_to_use. */
const SNAPSHOT_READY_TIMEOUT_MS = 120_000;
const SNAPSHOT_POLL_MS = 200;
/** Most volumes one run may make through the target (a leak past this is a suite bug). */
const MAX_VOLUMES = 10_000;

interface CsiVolume {
  name: string;
  volumeId: string;
  sizeBytes: number;
  replicas: number;
  /** The access types CreateVolume was given (both, unless the driver refused that). */
  block: boolean;
  mount: boolean;
  /** Bytes the filesystem still has to grow to at its next publish (expanded while detached). */
  pendingNodeExpansion: number;
  /** Removes its delete from the close-time cleanup. */
  forget: () => Promise<void>;
}

interface CsiSnapshot {
  snapshotId: string;
  sizeBytes: number;
}

/** Parses `k=v,k=v` (the --parameters flag); INVALID_ARGUMENT naming the bad pair. */
export function parseParameterList(text: string): Record<string, string> {
  const out: Record<string, string> = {};
  for (const pair of text.split(",")) {
    if (pair.trim() === "") continue;
    const eq = pair.indexOf("=");
    const key = pair.slice(0, eq).trim();
    if (eq <= 0 || key === "") {
      throw new ConformanceError({ code: "INVALID_ARGUMENT", message: `--parameters: ${JSON.stringify(pair)} is not KEY=VALUE` });
    }
    out[key] = pair.slice(eq + 1).trim();
  }
  return out;
}

/** Connects to the driver, asks what it can do, and wraps it as a Target. */
export async function startCsiTarget(options: CsiTargetOptions): Promise<Target> {
  const client = new CsiClient(options.endpoint);
  try {
    const probe = await client.call("Identity", "Probe", {}, 10_000);
    if ((probe.ready as { value?: boolean } | null)?.value === false) {
      throw new ConformanceError({
        code: "TARGET_FAILED",
        message: `CSI driver at ${options.endpoint} says it is not ready (Probe)`,
      });
    }
    const info = await client.call("Identity", "GetPluginInfo");
    const plugin = capabilityTypes(await client.call("Identity", "GetPluginCapabilities"));
    if (!plugin.has("CONTROLLER_SERVICE")) {
      throw new ConformanceError({
        code: "NOT_SUPPORTED",
        message: `CSI driver ${String(info.name)} has no controller service on ${options.endpoint}: run it with both services on one socket`,
      });
    }
    const controller = capabilityTypes(await client.call("Controller", "ControllerGetCapabilities"));
    const node = capabilityTypes(await client.call("Node", "NodeGetCapabilities"));
    const nodeInfo = await client.call("Node", "NodeGetInfo");
    const faults = options.faultsScript ? await FaultsScript.load(options.faultsScript) : null;
    fs.mkdirSync(options.dir, { recursive: true });
    return new CsiTarget(client, options, { info, controller, node, nodeInfo, faults });
  } catch (error) {
    client.close();
    throw error;
  }
}

interface Discovered {
  info: CsiReply;
  controller: ReadonlySet<string>;
  node: ReadonlySet<string>;
  nodeInfo: CsiReply;
  faults: FaultsScript | null;
}

class CsiTarget implements Target {
  readonly kind = "csi";
  readonly description: Readonly<Record<string, string>>;
  readonly capabilities: ReadonlySet<Capability>;
  readonly faults: TargetFaults;
  readonly #client: CsiClient;
  readonly #options: CsiTargetOptions;
  readonly #d: Discovered;
  readonly #nodeId: string;
  readonly #node: NodePublisher;
  /** Names made by this run are prefixed with it, so a run never meets a volume an earlier one left. */
  readonly #token = randomBytes(3).toString("hex");
  readonly #volumes = new Map<string, CsiVolume>();
  readonly #snapshots = new Map<string, CsiSnapshot>();
  readonly #cleanup = new CleanupStack();
  #made = 0;
  #closed = false;

  constructor(client: CsiClient, options: CsiTargetOptions, d: Discovered) {
    this.#client = client;
    this.#options = options;
    this.#d = d;
    this.#nodeId = String(d.nodeInfo.node_id ?? "");
    this.#node = new NodePublisher(client, {
      nodeId: this.#nodeId,
      dir: options.dir,
      controllerPublishes: d.controller.has("PUBLISH_UNPUBLISH_VOLUME"),
      stages: d.node.has("STAGE_UNSTAGE_VOLUME"),
    });
    const caps = new Set<Capability>(["block", "filesystem"]);
    if (d.controller.has("CREATE_DELETE_SNAPSHOT")) caps.add("snapshots");
    // The snapshot checks clone both snapshots and live volumes.
    if (d.controller.has("CREATE_DELETE_SNAPSHOT") && d.controller.has("CLONE_VOLUME")) caps.add("clones");
    if (d.controller.has("EXPAND_VOLUME")) caps.add("expand");
    for (const c of d.faults?.capabilities ?? []) caps.add(c);
    this.capabilities = caps;
    this.description = {
      storage: `${String(d.info.name)} ${String(d.info.vendor_version ?? "")}`.trim(),
      endpoint: options.endpoint,
      node: this.#nodeId,
      "controller capabilities": [...d.controller].sort().join(" "),
      "node capabilities": [...d.node].sort().join(" "),
      parameters: Object.entries(options.parameters ?? {})
        .map(([k, v]) => `${k}=${v}`)
        .join(","),
      "faults script": options.faultsScript ?? "none (fault checks not applicable)",
    };
    const script = d.faults;
    const need = (cap: Capability): FaultsScript => {
      if (!script || !this.capabilities.has(cap)) {
        throw new ConformanceError({
          code: "NOT_SUPPORTED",
          message: `csi target: no ${cap} (give a --faults-script that declares it)`,
        });
      }
      return script;
    };
    this.faults = {
      killStorageProcess: (n) => need("fault-kill-storage-process").killStorageProcess(n),
      killServingNode: (v) => need("fault-kill-serving-node").killServingNode(this.#volume(v).volumeId),
      partition: (n) => need("fault-partition-node").partition(n),
      slowDisk: (n, ms) => need("fault-slow-disk").slowDisk(n, ms),
      restore: async (n) => {
        if (!script) throw new ConformanceError({ code: "NOT_SUPPORTED", message: "csi target: no faults script" });
        await script.restore(n);
      },
    };
  }

  nodeIds(): readonly string[] {
    return [this.#nodeId];
  }

  async provision(request: ProvisionRequest): Promise<ProvisionedVolume> {
    this.#open();
    if (this.#volumes.has(request.name)) {
      throw new ConformanceError({ code: "TARGET_FAILED", message: `csi target: volume ${request.name} exists already` });
    }
    if (request.replicas > 1 && !this.capabilities.has("replication")) {
      throw new ConformanceError({
        code: "NOT_SUPPORTED",
        message: `csi target: ${request.replicas} replicas asked, and the faults script does not declare replication`,
      });
    }
    if (request.qos || request.qosClass) {
      throw new ConformanceError({
        code: "NOT_SUPPORTED",
        message: "csi target: QoS has no vendor-neutral form in CSI parameters",
      });
    }
    if (this.#volumes.size >= MAX_VOLUMES)
      throw new ConformanceError({ code: "INTERNAL", message: "csi target: too many volumes" });
    let source: object | undefined;
    if (request.source && "snapshot" in request.source) {
      source = { snapshot: { snapshot_id: this.#snapshot(request.source.snapshot).snapshotId } };
    } else if (request.source) {
      source = { volume: { volume_id: this.#volume(request.source.volume).volumeId } };
    }
    // This node's topology, as a provisioner asks for a volume its pod's node can reach.
    const here = this.#d.nodeInfo.accessible_topology as { segments?: Record<string, string> } | null;
    const create = (caps: object[]) =>
      this.#client.call("Controller", "CreateVolume", {
        name: this.#csiName(request.name),
        capacity_range: { required_bytes: String(request.sizeBytes) },
        volume_capabilities: caps,
        parameters: { ...(this.#options.parameters ?? {}) },
        ...(source ? { volume_content_source: source } : {}),
        ...(here?.segments && Object.keys(here.segments).length > 0
          ? { accessibility_requirements: { requisite: [here], preferred: [here] } }
          : {}),
      });
    const rw = { readOnly: false, fsType: "ext4" };
    // Both kinds, as the checks use one volume as a block device and as a filesystem; a driver that
    // takes one kind per volume (as Kubernetes asks) gets block, which every check but the filesystem ones uses.
    let kinds = { block: true, mount: true };
    let reply: CsiReply;
    try {
      reply = await create([capabilityFor({ ...rw, block: true }), capabilityFor({ ...rw, block: false })]);
    } catch (error) {
      if (!isCsiCode(error, status.INVALID_ARGUMENT)) throw error;
      kinds = { block: true, mount: false };
      reply = await create([capabilityFor({ ...rw, block: true })]);
    }
    const v = reply.volume as { volume_id: string; capacity_bytes: string } | null;
    if (!v?.volume_id) throw new ConformanceError({ code: "TARGET_FAILED", message: "CSI CreateVolume answered no volume_id" });
    const capacity = Number(v.capacity_bytes);
    const volume: CsiVolume = {
      name: request.name,
      volumeId: v.volume_id,
      sizeBytes: capacity > 0 ? capacity : request.sizeBytes,
      replicas: request.replicas,
      ...kinds,
      pendingNodeExpansion: 0,
      forget: async () => undefined,
    };
    this.#volumes.set(request.name, volume);
    volume.forget = this.#cleanup.push(`volume ${request.name}`, () => this.#deleteIfThere(request.name));
    if (capacity > 0 && capacity < request.sizeBytes) {
      throw new ConformanceError({
        code: "TARGET_FAILED",
        message: `CSI CreateVolume of ${request.name}: ${capacity} bytes made, ${request.sizeBytes} required`,
      });
    }
    return { name: request.name, sizeBytes: volume.sizeBytes, replicas: request.replicas };
  }

  async setQos(_volume: string, _qos: QosSpec): Promise<void> {
    throw new ConformanceError({
      code: "NOT_SUPPORTED",
      message: "csi target: QoS has no vendor-neutral form in CSI parameters",
    });
  }

  async attach(request: AttachRequest): Promise<AttachedVolume> {
    this.#open();
    const v = this.#volume(request.volume);
    if (request.nodeId && request.nodeId !== this.#nodeId) {
      throw new ConformanceError({
        code: "NOT_SUPPORTED",
        message: `csi target: volumes are published on this host's node (${this.#nodeId}), not ${request.nodeId}`,
      });
    }
    return this.#publish(v, request.mode ?? "block", request.fsType ?? "ext4", request.readOnly === true);
  }

  /** Publishes a volume on this node as kubelet would: ControllerPublish and NodeStage once, NodePublish per user. */
  async #publish(v: CsiVolume, mode: AccessMode, fsType: "ext4" | "xfs", readOnly: boolean): Promise<AttachedVolume> {
    if (mode === "nbd") {
      throw new ConformanceError({
        code: "NOT_SUPPORTED",
        message: "csi target: CSI hands out block devices and filesystems, not NBD",
      });
    }
    const block = mode === "block";
    if (!block && !v.mount) {
      throw new ConformanceError({
        code: "NOT_SUPPORTED",
        message: `csi target: the driver made ${v.name} for block access only`,
      });
    }
    const used = await this.#node.publish(v.volumeId, v.name, { block, fsType, readOnly });
    try {
      if (v.pendingNodeExpansion > 0 && !block) {
        await this.#nodeExpand(v, v.pendingNodeExpansion);
        v.pendingNodeExpansion = 0;
      }
    } catch (error) {
      await used.detach().catch(() => undefined);
      throw error;
    }
    const dataPath: DataPath = block
      ? { kind: "block", devicePath: used.targetPath }
      : { kind: "filesystem", mountPath: used.targetPath, fsType };
    return { volume: v.name, nodeId: this.#nodeId, dataPath, detach: used.detach };
  }

  /** A snapshot's contents, read-only: a volume made from it (CSI has no other way to read one), deleted on detach. */
  async attachSnapshot(snapshot: SnapshotId, mode: AccessMode = "block"): Promise<AttachedVolume> {
    this.#need("snapshots", "attach a snapshot");
    const view = `${snapshot.volume}-view-${++this.#made}`;
    await this.provision({ name: view, sizeBytes: this.#snapshot(snapshot).sizeBytes, replicas: 1, source: { snapshot } });
    try {
      const attached = await this.#publish(this.#volume(view), mode, "ext4", true);
      return {
        ...attached,
        volume: snapshot.volume,
        detach: async () => {
          await attached.detach();
          await this.#deleteIfThere(view);
        },
      };
    } catch (error) {
      await this.#deleteIfThere(view).catch(() => undefined);
      throw error;
    }
  }

  async snapshot(snapshot: SnapshotId): Promise<void> {
    this.#need("snapshots", "take a snapshot");
    const key = snapshotKey(snapshot);
    if (this.#snapshots.has(key))
      throw new ConformanceError({ code: "TARGET_FAILED", message: `snapshot ${key} exists already` });
    const v = this.#volume(snapshot.volume);
    const request = { source_volume_id: v.volumeId, name: this.#csiName(`snap-${++this.#made}`), parameters: {} };
    // The external-snapshotter's way: CreateSnapshot again with the same arguments until ready_to_use.
    const deadline = Date.now() + SNAPSHOT_READY_TIMEOUT_MS;
    for (;;) {
      const made = (await this.#client.call("Controller", "CreateSnapshot", request)).snapshot as {
        snapshot_id: string;
        ready_to_use: boolean;
        size_bytes: string;
      } | null;
      if (!made?.snapshot_id)
        throw new ConformanceError({ code: "TARGET_FAILED", message: "CSI CreateSnapshot answered no snapshot_id" });
      this.#snapshots.set(key, { snapshotId: made.snapshot_id, sizeBytes: Number(made.size_bytes) || v.sizeBytes });
      if (made.ready_to_use) return;
      if (Date.now() > deadline) {
        throw new ConformanceError({
          code: "TARGET_FAILED",
          message: `snapshot ${key} not ready_to_use within ${SNAPSHOT_READY_TIMEOUT_MS} ms`,
        });
      }
      await new Promise((r) => setTimeout(r, SNAPSHOT_POLL_MS));
    }
  }

  async deleteSnapshot(snapshot: SnapshotId): Promise<void> {
    const key = snapshotKey(snapshot);
    // CSI's DeleteSnapshot succeeds on a snapshot that is gone: what this run made is what exists.
    const s = this.#snapshot(snapshot);
    await this.#client.call("Controller", "DeleteSnapshot", { snapshot_id: s.snapshotId });
    this.#snapshots.delete(key);
  }

  async revert(_snapshot: SnapshotId): Promise<void> {
    throw new ConformanceError({
      code: "NOT_SUPPORTED",
      message: "csi target: CSI has no in-place revert (restore is a new volume)",
    });
  }

  async expand(volume: string, sizeBytes: number): Promise<void> {
    this.#need("expand", "expand a volume");
    const v = this.#volume(volume);
    const uses = this.#node.uses(v.volumeId);
    const first = uses[0];
    const reply = await this.#client.call("Controller", "ControllerExpandVolume", {
      volume_id: v.volumeId,
      capacity_range: { required_bytes: String(sizeBytes) },
      ...(first ? { volume_capability: capabilityFor(first.mode) } : {}),
    });
    const capacity = Number(reply.capacity_bytes);
    if (capacity > 0 && capacity < sizeBytes) {
      throw new ConformanceError({
        code: "TARGET_FAILED",
        message: `CSI ControllerExpandVolume of ${volume}: ${capacity} bytes, ${sizeBytes} asked`,
      });
    }
    v.sizeBytes = capacity > 0 ? capacity : sizeBytes;
    // kubelet then grows what the node made of it (the filesystem), where the driver asks for that; a
    // volume in use nowhere grows at its next publish.
    if (reply.node_expansion_required && this.#d.node.has("EXPAND_VOLUME")) {
      if (first) await this.#nodeExpand(v, sizeBytes);
      else v.pendingNodeExpansion = sizeBytes;
    }
  }

  async #nodeExpand(v: CsiVolume, sizeBytes: number): Promise<void> {
    for (const use of this.#node.uses(v.volumeId)) {
      await this.#client.call("Node", "NodeExpandVolume", {
        volume_id: v.volumeId,
        volume_path: use.targetPath,
        staging_target_path: use.stagingPath,
        capacity_range: { required_bytes: String(sizeBytes) },
        volume_capability: capabilityFor(use.mode),
      });
    }
  }

  async deleteVolume(volume: string): Promise<void> {
    this.#volume(volume);
    await this.#deleteIfThere(volume);
  }

  /** Unpublishes a volume everywhere here, then deletes it; stops at the first step that fails (a later call resumes). */
  async #deleteIfThere(name: string): Promise<void> {
    const v = this.#volumes.get(name);
    if (!v) return;
    await this.#node.releaseAll(v.volumeId);
    await this.#client.call("Controller", "DeleteVolume", { volume_id: v.volumeId });
    this.#volumes.delete(name);
    await v.forget();
  }

  async health(volume: string): Promise<VolumeHealth> {
    const v = this.#volume(volume);
    const replicas = this.#d.faults?.listsReplicas ? await this.#d.faults.replicas(v.volumeId) : [];
    const inUseHere = this.#node.uses(v.volumeId).length > 0;
    if (!this.#d.controller.has("GET_VOLUME")) {
      return { state: inUseHere ? "unknown" : "detached", servingNode: inUseHere ? this.#nodeId : "", replicas };
    }
    const reply = await this.#client.call("Controller", "ControllerGetVolume", { volume_id: v.volumeId });
    const status = (reply.status ?? {}) as { published_node_ids?: string[]; volume_condition?: { abnormal?: boolean } | null };
    // A driver that publishes without ControllerPublish lists no nodes: what this target published counts too.
    const published = status.published_node_ids?.length ? status.published_node_ids : inUseHere ? [this.#nodeId] : [];
    const abnormal = status.volume_condition?.abnormal === true;
    return {
      state: abnormal ? "degraded" : published.length === 0 ? "detached" : "healthy",
      servingNode: published[0] ?? "",
      replicas,
    };
  }

  async replicaPaths(_volume: string): Promise<{ nodeId: string; dataPath: DataPath }[]> {
    throw new ConformanceError({ code: "NOT_SUPPORTED", message: "csi target: CSI cannot read one replica on its own" });
  }

  async collectLogs(dir: string): Promise<string[]> {
    // The driver's logs are the vendor's; what the suite saw of the driver goes with the report.
    fs.mkdirSync(dir, { recursive: true });
    const file = path.join(dir, "csi-driver.json");
    fs.writeFileSync(file, `${JSON.stringify({ ...this.description, nodeInfo: this.#d.nodeInfo }, null, 2)}\n`);
    return [file];
  }

  async close(): Promise<void> {
    if (this.#closed) return;
    this.#closed = true;
    const failed: string[] = [];
    // Whatever is still in use here first: nothing is deleted under a mount.
    for (const id of this.#node.volumeIds) {
      await this.#node.releaseAll(id).catch((e: Error) => failed.push(`detach ${id}: ${e.message}`));
    }
    // Snapshots next: a driver may refuse to delete a volume that still has some.
    for (const [key, s] of [...this.#snapshots]) {
      await this.#client.call("Controller", "DeleteSnapshot", { snapshot_id: s.snapshotId }).then(
        () => this.#snapshots.delete(key),
        (e: Error) => failed.push(`snapshot ${key}: ${e.message}`),
      );
    }
    failed.push(...(await this.#cleanup.run()));
    this.#client.close();
    // Left in place when something could not be undone: a recursive delete must never run through a mount.
    if (failed.length > 0) {
      throw new ConformanceError({
        code: "TARGET_FAILED",
        message: `csi target cleanup (${this.#options.dir} left as it is): ${failed.join("; ")}`,
      });
    }
    fs.rmSync(this.#options.dir, { recursive: true, force: true });
  }

  async [Symbol.asyncDispose](): Promise<void> {
    await this.close();
  }

  #csiName(name: string): string {
    return `kc-${this.#token}-${name}`;
  }

  #volume(name: string): CsiVolume {
    const v = this.#volumes.get(name);
    if (!v) throw new ConformanceError({ code: "NOT_FOUND", message: `volume ${name} does not exist` });
    return v;
  }

  #snapshot(s: SnapshotId): CsiSnapshot {
    const found = this.#snapshots.get(snapshotKey(s));
    if (found === undefined)
      throw new ConformanceError({ code: "NOT_FOUND", message: `snapshot ${snapshotKey(s)} does not exist` });
    return found;
  }

  #need(capability: Capability, what: string): void {
    if (!this.capabilities.has(capability)) {
      throw new ConformanceError({ code: "NOT_SUPPORTED", message: `csi target cannot ${what}: the driver lacks ${capability}` });
    }
  }

  #open(): void {
    if (this.#closed) throw new ConformanceError({ code: "CANCELLED", message: "csi target is closed" });
  }
}

function snapshotKey(s: SnapshotId): string {
  return `${s.volume}@${s.name}`;
}

/** True when `error` is a CSI call that failed with `grpcCode`. */
function isCsiCode(error: unknown, grpcCode: number): boolean {
  return error instanceof CsiCallError && error.grpcCode === grpcCode;
}
