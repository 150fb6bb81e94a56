import { status, type UntypedServiceImplementation } from "@grpc/grpc-js";
import { type KeelsonClient, KeelsonError, type Snapshot, type Volume, type VolumeSource } from "@keelson/sdk";
import { isWriterMode, requireCapabilities, unsupportedReason, type WireVolumeCapability } from "./capabilities.js";
import { CsiError, csiUnary, invalidField, isNotFound, VolumeLocks } from "./csi-errors.js";
import { keelsonNameOf, parseSnapshotId, snapshotIdOf, volumeNameOf } from "./ids.js";
import { parseParameters, QOS_PARAMETERS } from "./parameters.js";
import { excludedBy, volumeTopology, type WireTopologyRequirement, ZONE_TOPOLOGY_KEY } from "./topology.js";

/** A volume created without a capacity range (the spec leaves the size to the plugin then). */
export const DEFAULT_VOLUME_BYTES = 1024 ** 3;
const BLOCK = 4096;
/** Most entries one ListVolumes or ListSnapshots page returns when the caller sets no max_entries. */
const DEFAULT_PAGE = 1000;

/** What the Controller service needs of the engine: the SDK client, as every keelson-csi call goes through it. */
export type ControllerEngine = Pick<
  KeelsonClient,
  | "createVolume"
  | "getVolume"
  | "listVolumes"
  | "deleteVolume"
  | "resizeVolume"
  | "createSnapshot"
  | "listSnapshots"
  | "deleteSnapshot"
  | "getNode"
  | "listNodes"
  | "attachVolume"
  | "detachVolume"
  | "listAttachments"
  | "setVolumeQos"
>;

interface CapacityRange {
  required_bytes?: string;
  limit_bytes?: string;
}

function bytes(value: string | undefined, field: string): number {
  const n = Number(value ?? "0");
  if (!Number.isSafeInteger(n) || n < 0) throw invalidField(field, `a byte count from 0 to 2^53 is expected, got ${value}`);
  return n;
}

/** The size to create or grow to: the required bytes rounded up to 4 KiB, within the limit (OUT_OF_RANGE otherwise). */
export function sizeFor(range: CapacityRange | null | undefined, fallback: number): number {
  const required = bytes(range?.required_bytes, "capacity_range.required_bytes");
  const limit = bytes(range?.limit_bytes, "capacity_range.limit_bytes");
  if (limit > 0 && required > limit) {
    throw new CsiError(status.INVALID_ARGUMENT, `capacity_range: required_bytes ${required} exceeds limit_bytes ${limit}`);
  }
  let size = Math.ceil((required || fallback) / BLOCK) * BLOCK;
  if (limit > 0 && size > limit) size = Math.floor(limit / BLOCK) * BLOCK;
  if (size === 0 || (limit > 0 && size < required)) {
    throw new CsiError(status.OUT_OF_RANGE, `capacity_range: no multiple of ${BLOCK} bytes lies in [${required}, ${limit}]`);
  }
  return size;
}

/** A CSI Volume; `holder` is the node of the controller's engine, whose pool holds a one-replica volume. */
function wireVolume(v: Volume, context: Record<string, string>, holder: { nodeId: string; zone: string }) {
  return {
    capacity_bytes: String(v.sizeBytes),
    volume_id: v.name,
    volume_context: context,
    content_source: v.source
      ? "snapshot" in v.source
        ? { snapshot: { snapshot_id: snapshotIdOf(v.source.snapshot.volume, v.source.snapshot.name) } }
        : { volume: { volume_id: v.source.volume } }
      : null,
    accessible_topology: volumeTopology(v, holder),
  };
}

function wireSnapshot(s: Snapshot) {
  const ms = s.createdAt.getTime();
  return {
    size_bytes: String(s.sizeBytes),
    snapshot_id: snapshotIdOf(s.volume, s.name),
    source_volume_id: s.volume,
    creation_time: { seconds: String(Math.floor(ms / 1000)), nanos: (ms % 1000) * 1e6 },
    ready_to_use: true,
    group_snapshot_id: "",
  };
}

/** One page of `items` after `token` (the index to start at, as the previous page gave it); ABORTED for a token it never gave. */
function page<T>(items: T[], token: string, maxEntries: number): { entries: T[]; next_token: string } {
  if (maxEntries < 0) throw invalidField("max_entries", "must not be negative");
  let start = 0;
  if (token !== "") {
    start = Number(token);
    if (!/^\d+$/.test(token) || start > items.length) {
      throw new CsiError(status.ABORTED, `starting_token ${JSON.stringify(token)} is not one this plugin gave`);
    }
  }
  const end = Math.min(items.length, start + (maxEntries || DEFAULT_PAGE));
  return { entries: items.slice(start, end), next_token: end < items.length ? String(end) : "" };
}

/** A snapshot id, or null for one this driver never gives (not `VOLUME@SNAPSHOT`). */
function trySnapshotId(id: string): { volume: string; name: string } | null {
  try {
    return parseSnapshotId(id);
  } catch {
    return null;
  }
}

function contentSource(req: {
  volume_content_source?: { snapshot?: { snapshot_id?: string } | null; volume?: { volume_id?: string } | null } | null;
}): VolumeSource | undefined {
  const src = req.volume_content_source;
  if (!src) return undefined;
  if (src.snapshot)
    return { snapshot: parseSnapshotId(src.snapshot.snapshot_id ?? "", "volume_content_source.snapshot.snapshot_id") };
  if (src.volume) return { volume: volumeNameOf(src.volume.volume_id ?? "", "volume_content_source.volume.volume_id") };
  throw invalidField("volume_content_source", "a snapshot or a volume is required");
}

/** Where a volume is published (its attachments' nodes) and whether it is abnormal (degraded, rebuilding or faulted). */
/**
 * True when nodes use the volume through attachments in the cluster: a cluster volume (replicas > 1, or
 * made with `replicated`). A plain one-replica volume lives on its engine's pool and is served there
 * without one (also in a cluster).
 */
function isAttachable(v: Pick<Volume, "replicated">, cluster: boolean): boolean {
  return cluster && v.replicated;
}

async function volumeStatus(engine: ControllerEngine, v: Volume, cluster: boolean) {
  const published = isAttachable(v, cluster) ? (await engine.listAttachments({ name: v.name })).map((a) => a.nodeId) : [];
  const abnormal = v.state !== "healthy";
  return {
    published_node_ids: published,
    volume_condition: { abnormal, message: abnormal ? `volume ${v.name} is ${v.state}` : "" },
  };
}

/** A volume is published to a node by attaching it there; a single engine (no cluster) serves its volumes without that. */
async function isCluster(engine: ControllerEngine): Promise<boolean> {
  return (await engine.getNode()).etcdEndpoints !== "";
}

/**
 * The CSI Controller service over the engine's control API: volumes (with clones from snapshots and
 * volumes), publication to nodes (attachments), expansion, snapshots, capacity. Every call is idempotent
 * (a retried CreateVolume finds its volume; a delete of what is gone succeeds), and one operation per
 * volume runs at a time (ABORTED otherwise).
 */
export function controllerService(engine: ControllerEngine): UntypedServiceImplementation {
  const locks = new VolumeLocks();
  return {
    CreateVolume: csiUnary(
      async (req: {
        name: string;
        capacity_range?: CapacityRange | null;
        volume_capabilities?: WireVolumeCapability[];
        parameters?: Record<string, string>;
        volume_content_source?: Parameters<typeof contentSource>[0]["volume_content_source"];
        accessibility_requirements?: WireTopologyRequirement | null;
      }) => {
        const name = keelsonNameOf(req.name, "name");
        const caps = requireCapabilities(req.volume_capabilities, "volume_capabilities");
        for (const cap of caps) {
          const why = unsupportedReason(cap);
          if (why) throw invalidField("volume_capabilities", why);
        }
        const params = parseParameters(req.parameters ?? {});
        const source = contentSource(req);
        // A clone without a size is the source's size; one with a size must be at least that (the engine checks).
        const size = source && !req.capacity_range ? 0 : sizeFor(req.capacity_range, DEFAULT_VOLUME_BYTES);
        return locks.run(name, "CreateVolume", async () => {
          const holder = await engine.getNode();
          if (params.replicas === 1 && !params.replicated) {
            const excluded = excludedBy(req.accessibility_requirements, holder);
            if (excluded) throw new CsiError(status.RESOURCE_EXHAUSTED, excluded);
          }
          const v = await engine.createVolume({
            name,
            sizeBytes: size,
            replicas: params.replicas,
            ...(params.replicated ? { replicated: true } : {}),
            labels: { "csi.keelson.io/created-by": "keelson-csi" },
            ...(source ? { source } : {}),
            ...(params.qosClass ? { qosClass: params.qosClass } : {}),
            ...(params.qos ? { qos: params.qos } : {}),
          });
          const limit = bytes(req.capacity_range?.limit_bytes, "capacity_range.limit_bytes");
          if (limit > 0 && v.sizeBytes > limit) {
            throw new CsiError(
              status.ALREADY_EXISTS,
              `volume ${name} exists with ${v.sizeBytes} bytes, past limit_bytes ${limit}`,
            );
          }
          const context = { fsType: params.fsType, mkfsOptions: params.mkfsOptions.join(" "), replicas: String(params.replicas) };
          return { volume: wireVolume(v, context, holder) };
        });
      },
    ),

    DeleteVolume: csiUnary(async (req: { volume_id: string }) => {
      const name = volumeNameOf(req.volume_id);
      return locks.run(name, "DeleteVolume", async () => {
        await engine.deleteVolume({ name }).catch((error: unknown) => {
          if (!isNotFound(error)) throw error;
        });
        return {};
      });
    }),

    ControllerPublishVolume: csiUnary(
      async (req: { volume_id: string; node_id: string; volume_capability?: WireVolumeCapability | null; readonly: boolean }) => {
        const name = volumeNameOf(req.volume_id);
        if (!req.node_id) throw invalidField("node_id", "is required");
        if (!req.volume_capability) throw invalidField("volume_capability", "is required");
        const why = unsupportedReason(req.volume_capability);
        if (why) throw invalidField("volume_capability", why);
        const readOnly = req.readonly || !isWriterMode(req.volume_capability);
        return locks.run(name, "ControllerPublishVolume", async () => {
          const v = await engine.getVolume({ name });
          const here = await engine.getNode();
          const cluster = here.etcdEndpoints !== "";
          if (isAttachable(v, cluster)) await engine.attachVolume({ name, nodeId: req.node_id, readOnly });
          else if (req.node_id !== here.nodeId && !cluster)
            throw new CsiError(status.NOT_FOUND, `node ${req.node_id}: this engine is node ${here.nodeId}`);
          else if (req.node_id !== here.nodeId)
            throw new CsiError(
              status.FAILED_PRECONDITION,
              `volume ${name} has one replica, on node ${here.nodeId}'s pool: it is served there only (its accessible_topology says so), not on ${req.node_id}`,
            );
          return { publish_context: { readOnly: String(readOnly) } };
        });
      },
    ),

    ControllerUnpublishVolume: csiUnary(async (req: { volume_id: string; node_id: string }) => {
      const name = volumeNameOf(req.volume_id);
      return locks.run(name, "ControllerUnpublishVolume", async () => {
        const v = await engine.getVolume({ name }).catch((error: unknown) => {
          if (isNotFound(error)) return null;
          throw error;
        });
        if (v && isAttachable(v, await isCluster(engine))) {
          await engine.detachVolume({ name, ...(req.node_id ? { nodeId: req.node_id } : {}) }).catch((error: unknown) => {
            // Gone, or its node left the cluster: nothing is published there any more.
            if (!isNotFound(error) && !(error instanceof KeelsonError && error.code === "NODE_NOT_FOUND")) throw error;
          });
        }
        return {};
      });
    }),

    ValidateVolumeCapabilities: csiUnary(
      async (req: {
        volume_id: string;
        volume_capabilities?: WireVolumeCapability[];
        volume_context?: Record<string, string>;
        parameters?: Record<string, string>;
      }) => {
        const name = volumeNameOf(req.volume_id);
        const caps = requireCapabilities(req.volume_capabilities, "volume_capabilities");
        await engine.getVolume({ name });
        const reasons = caps.map(unsupportedReason).filter((r): r is string => r !== null);
        if (reasons.length > 0) return { confirmed: null, message: reasons.join("; ") };
        parseParameters(req.parameters ?? {});
        return {
          confirmed: { volume_context: req.volume_context ?? {}, volume_capabilities: caps, parameters: req.parameters ?? {} },
          message: "",
        };
      },
    ),

    ListVolumes: csiUnary(async (req: { max_entries: number; starting_token: string }) => {
      const volumes = (await engine.listVolumes()).sort((a, b) => (a.name < b.name ? -1 : 1));
      const { entries, next_token } = page(volumes, req.starting_token, req.max_entries);
      const holder = await engine.getNode();
      const cluster = holder.etcdEndpoints !== "";
      const withStatus = await Promise.all(
        entries.map(async (v) => ({ volume: wireVolume(v, {}, holder), status: await volumeStatus(engine, v, cluster) })),
      );
      return { entries: withStatus, next_token };
    }),

    ControllerGetVolume: csiUnary(async (req: { volume_id: string }) => {
      const v = await engine.getVolume({ name: volumeNameOf(req.volume_id) });
      const holder = await engine.getNode();
      return { volume: wireVolume(v, {}, holder), status: await volumeStatus(engine, v, holder.etcdEndpoints !== "") };
    }),

    ControllerModifyVolume: csiUnary(async (req: { volume_id: string; mutable_parameters?: Record<string, string> }) => {
      const name = volumeNameOf(req.volume_id);
      // A VolumeAttributesClass changes QoS live: only the QoS parameters may change after creation.
      const mutable = req.mutable_parameters ?? {};
      const fixed = Object.keys(mutable).filter((k) => !QOS_PARAMETERS.has(k));
      if (fixed.length > 0)
        throw invalidField("mutable_parameters", `${fixed.join(", ")} cannot change after creation; QoS parameters can`);
      const params = parseParameters(mutable);
      return locks.run(name, "ControllerModifyVolume", async () => {
        await engine.setVolumeQos({ name, ...(params.qosClass ? { qosClass: params.qosClass } : {}), qos: params.qos ?? {} });
        return {};
      });
    }),

    GetCapacity: csiUnary(async (req: { accessible_topology?: { segments?: Record<string, string> } | null }) => {
      const zone = req.accessible_topology?.segments?.[ZONE_TOPOLOGY_KEY];
      if (!(await isCluster(engine))) {
        const node = await engine.getNode();
        if (zone !== undefined && zone !== node.zone)
          return { available_capacity: "0", maximum_volume_size: null, minimum_volume_size: null };
        return { available_capacity: String(node.pool.freeBytes), maximum_volume_size: null, minimum_volume_size: null };
      }
      const nodes = (await engine.listNodes()).filter((n) => n.alive && (zone === undefined || n.zone === zone));
      const free = nodes.reduce((sum, n) => sum + (n.disk?.freeBytes ?? 0), 0);
      return { available_capacity: String(free), maximum_volume_size: null, minimum_volume_size: null };
    }),

    ControllerGetCapabilities: csiUnary(async () => ({
      capabilities: [
        "CREATE_DELETE_VOLUME",
        "PUBLISH_UNPUBLISH_VOLUME",
        "LIST_VOLUMES",
        "GET_CAPACITY",
        "CREATE_DELETE_SNAPSHOT",
        "LIST_SNAPSHOTS",
        "CLONE_VOLUME",
        "PUBLISH_READONLY",
        "EXPAND_VOLUME",
        "LIST_VOLUMES_PUBLISHED_NODES",
        "VOLUME_CONDITION",
        "GET_VOLUME",
        "MODIFY_VOLUME",
        "SINGLE_NODE_MULTI_WRITER",
      ].map((type) => ({ rpc: { type } })),
    })),

    CreateSnapshot: csiUnary(async (req: { source_volume_id: string; name: string }) => {
      const volume = volumeNameOf(req.source_volume_id, "source_volume_id");
      const name = keelsonNameOf(req.name, "name");
      return locks.run(volume, "CreateSnapshot", async () => {
        // A CSI snapshot name is unique across volumes; keelson's only within one.
        const elsewhere = (await engine.listSnapshots()).find((s) => s.name === name && s.volume !== volume);
        if (elsewhere) {
          throw new CsiError(status.ALREADY_EXISTS, `snapshot ${req.name} exists for volume ${elsewhere.volume}, not ${volume}`);
        }
        return { snapshot: wireSnapshot(await engine.createSnapshot({ volume, name })) };
      });
    }),

    DeleteSnapshot: csiUnary(async (req: { snapshot_id: string }) => {
      if (!req.snapshot_id) throw invalidField("snapshot_id", "is required");
      // An id this driver never gave names no snapshot: deleting it succeeds, as for one already gone.
      const parsed = trySnapshotId(req.snapshot_id);
      if (!parsed) return {};
      const { volume, name } = parsed;
      return locks.run(volume, "DeleteSnapshot", async () => {
        await engine.deleteSnapshot({ volume, name }).catch((error: unknown) => {
          if (!isNotFound(error)) throw error;
        });
        return {};
      });
    }),

    ListSnapshots: csiUnary(
      async (req: { max_entries: number; starting_token: string; source_volume_id: string; snapshot_id: string }) => {
        let snapshots: Snapshot[];
        if (req.snapshot_id) {
          const parsed = trySnapshotId(req.snapshot_id);
          const found = parsed
            ? await engine.listSnapshots({ volume: parsed.volume }).catch((error: unknown) => {
                if (isNotFound(error)) return [];
                throw error;
              })
            : [];
          snapshots = found.filter((s) => s.name === parsed?.name);
        } else if (req.source_volume_id) {
          const volume = volumeNameOf(req.source_volume_id, "source_volume_id");
          snapshots = await engine.listSnapshots({ volume }).catch((error: unknown) => {
            if (isNotFound(error)) return [];
            throw error;
          });
        } else {
          snapshots = await engine.listSnapshots();
        }
        snapshots.sort((a, b) => (snapshotIdOf(a.volume, a.name) < snapshotIdOf(b.volume, b.name) ? -1 : 1));
        const { entries, next_token } = page(snapshots, req.starting_token, req.max_entries);
        return { entries: entries.map((s) => ({ snapshot: wireSnapshot(s) })), next_token };
      },
    ),

    ControllerExpandVolume: csiUnary(
      async (req: {
        volume_id: string;
        capacity_range?: CapacityRange | null;
        volume_capability?: WireVolumeCapability | null;
      }) => {
        const name = volumeNameOf(req.volume_id);
        if (!req.capacity_range) throw invalidField("capacity_range", "is required");
        return locks.run(name, "ControllerExpandVolume", async () => {
          const current = await engine.getVolume({ name });
          const size = sizeFor(req.capacity_range, current.sizeBytes);
          const v = size > current.sizeBytes ? await engine.resizeVolume({ name, sizeBytes: size }) : current;
          // A filesystem on it grows on the node (NodeExpandVolume); a raw block volume needs nothing more.
          const block = req.volume_capability?.access_type === "block" || Boolean(req.volume_capability?.block);
          return { capacity_bytes: String(v.sizeBytes), node_expansion_required: !block };
        });
      },
    ),
  };
}
