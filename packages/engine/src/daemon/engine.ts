import fs from "node:fs";
import os from "node:os";
import { credentials, Server, ServerCredentials } from "@grpc/grpc-js";
import { KeelsonError } from "@keelson/sdk";
import { EventServiceService, NodeServiceService, SnapshotServiceService, VolumeServiceService } from "@keelson/sdk/experimental";
import { DEFAULT_REPLACE_AFTER_MS, repairDegradedVolumes } from "../cluster/degraded-repair.js";
import { type DiskRecord, DiskReporter } from "../cluster/disk-reports.js";
import { IdleVolumeRepairer } from "../cluster/idle-repair.js";
import { ClusterMembership } from "../cluster/membership.js";
import { PeerDialer } from "../cluster/peer-dialer.js";
import { Reconciler } from "../cluster/reconciler.js";
import { ReplicaAccess, type ReplicaPeer } from "../cluster/replica-access.js";
import { openRepairFrontend } from "../cluster/replicated-attach.js";
import { SpaceAlertPublisher } from "../cluster/space-alerts.js";
import { VolumeAttacher } from "../cluster/volume-attacher.js";
import type { ControlContext } from "../control/context.js";
import { eventService } from "../control/event-service.js";
import { nodeService } from "../control/node-service.js";
import { withTypedDecodeErrors } from "../control/request-decoding.js";
import { snapshotService } from "../control/snapshot-service.js";
import { volumeService } from "../control/volume-service.js";
import type { IoEngine, IoEngineChoice } from "../device-io/device-io.js";
import { ioEngineFromEnv, useIoEngine } from "../device-io/select.js";
import { type EngineMetricsSources, engineRegistry, serveMetrics } from "../metrics/prometheus.js";
import { DEFAULT_NBD_BUFFER_BYTES } from "../nbd/byte-budget.js";
import type { NbdPeer } from "../nbd/export.js";
import { NbdServer } from "../nbd/server.js";
import { admitReservation, DEFAULT_HEADROOM, type DiskCapability } from "../qos/admission.js";
import { calibrate } from "../qos/calibrate.js";
import { defaultPolicy, type QosPolicy } from "../qos/policy.js";
import { QosManager } from "../qos/qos-manager.js";
import { RebuildThrottle } from "../replication/rebuild-throttle.js";
import type { ReplicaDial } from "../replication/replica-client.js";
import { DEFAULT_REPLICA_TIMEOUT_MS, type ReplicatedVolume } from "../replication/replicated-volume.js";
import { Pool } from "../store/pool.js";
import { openLocalReplica, TargetCatalog } from "../target/catalog.js";
import { type ReplicaAuthority, ReplicaCatalog } from "../target/replica-catalog.js";
import { jsonLogger, type Logger } from "../util/log.js";
import { watchLoopStalls } from "../util/loop-stalls.js";
import { tuneAllocator } from "./allocator.js";
import { callerCheckOf, type EtcdTlsFiles, etcdClientTls, type NbdTlsFiles, nbdServerTls, readPem } from "./engine-tls.js";
import { checkControlListen } from "./listen-policy.js";
import { SpaceWatch } from "./space-watch.js";

export { DEFAULT_OVERCOMMIT_PERCENT, validateOvercommitPercent } from "../store/provisioning.js";

/** Version reported by GetNode. */
export const ENGINE_VERSION = "0.1.0";
export const DEFAULT_GRPC_ADDRESS = "127.0.0.1:7420";
export const DEFAULT_NBD_ADDRESS = "127.0.0.1:10809";
/** Port of the replica protocol's listener on the storage address (a cluster node only). */
export const DEFAULT_REPLICA_PORT = 10810;

/** Options of {@link startEngine}. */
export interface EngineOptions {
  /** The disk I/O engine (keelsond --io); default: KEELSON_IO, else auto (io_uring where it works). */
  ioEngine?: IoEngineChoice;
  /** Read and write volumes' blocks with O_DIRECT (default: KEELSON_DIRECT_IO, else off); UNAVAILABLE on the thread-pool engine. */
  directIo?: boolean;
  /** Block device or file of the disk pool. */
  poolPath: string;
  /** Creates the pool file with this size when it does not exist. */
  poolSizeBytes?: number;
  /** Formats a device holding foreign data (destroys it). */
  forceFormat?: boolean;
  /** Extent size of a pool formatted now (default 1 MiB). */
  extentSizeBytes?: number;
  /** Provisioned size the pool may promise, in percent of its data capacity (default 200; see `OpenPoolOptions`). */
  overcommitPercent?: number;
  /** Named QoS policies volumes may be created with. */
  qosClasses?: ReadonlyMap<string, QosPolicy>;
  /** I/Os the disk scheduler lets run at once (default: 64 on io_uring, twice the libuv thread pool on the thread-pool engine). */
  diskQueueDepth?: number;
  /** Prometheus `/metrics` over HTTP, `host:port`; none when absent. */
  metricsAddress?: string;
  /** etcd client URLs (comma-separated): join that cluster; a single engine without. */
  etcdEndpoints?: string;
  /** Address for replica (storage) traffic; default the control address's host. */
  storageAddress?: string;
  /** The replica protocol's listener, `host:port` (port 0 picks one); default the storage address and {@link DEFAULT_REPLICA_PORT}. */
  replicaAddress?: string;
  /** Topology label (zone) of this node. */
  zone?: string;
  /** Seconds the node's liveness lease lives without a keepalive. */
  leaseTtlS?: number;
  /** How long a replica's node may be down before the leader places the replica on another node (ms). */
  replaceReplicaAfterMs?: number;
  /** Serve the control API over TLS (mutual with a client CA; in a cluster, required: peers call each other with their certificates). */
  tls?: ControlTls;
  /** What the disk can do, as the operator says: a new pool takes it instead of being calibrated. */
  diskCapability?: { iops: number; bytesPerSec: number };
  /** Bytes a second this node's rebuilds may copy, all together; 0 or unset: no limit. */
  rebuildBytesPerSec?: number;
  /** Control API: `host:port` or `unix:/path`. */
  grpcAddress?: string;
  /** NBD TCP listener `host:port`; "" for none. */
  nbdAddress?: string;
  /** NBD unix socket path. */
  nbdSocket?: string;
  /**
   * Bytes of NBD request payloads and reply buffers held at once, all
   * connections (clients and replica peers) together; past it requests wait
   * and their connections stop being read. Default 256 MiB.
   */
  nbdBufferBytes?: number;
  nodeId?: string;
  log?: Logger;
  /** Serve the control API on a non-loopback address without TLS (refused otherwise); logged as a warning. */
  insecure?: boolean;
  /** This node's certificate for an etcd on TLS with client-certificate auth (`https://` endpoints); none: plaintext. */
  etcdTls?: EtcdTlsFiles;
  /** TLS of the NBD TCP listener (STARTTLS required); none: plaintext. */
  nbdTls?: NbdTlsFiles;
}

/** A running engine; `close()` stops serving and checkpoints the pool. */
export interface StartedEngine extends AsyncDisposable {
  readonly grpcAddress: string;
  readonly nbdAddress: string;
  readonly nbdSocket: string;
  /** `host:port` of `/metrics`, or "" when not served. */
  readonly metricsAddress: string;
  /** This engine's membership of a cluster; null for a single engine. */
  readonly membership: ClusterMembership | null;
  readonly pool: Pool;
  close(): Promise<void>;
}

/** PEM files of the control API's TLS: its certificate and key, and (for mutual TLS) the CA its clients' certificates must chain to. */
export interface ControlTls {
  certFile: string;
  keyFile: string;
  clientCaFile?: string;
}

function serverCredentials(tls: ControlTls | undefined): ServerCredentials {
  if (!tls) return ServerCredentials.createInsecure();
  const keyCert = { cert_chain: readPem(tls.certFile, "--tls-cert"), private_key: readPem(tls.keyFile, "--tls-key") };
  const clientCa = tls.clientCaFile ? readPem(tls.clientCaFile, "--tls-client-ca") : null;
  // With a client CA every caller must present a certificate it signed (mutual TLS).
  return ServerCredentials.createSsl(clientCa, [keyCert], clientCa !== null);
}

function bindGrpc(server: Server, address: string, tls?: ControlTls): Promise<string> {
  return new Promise((resolve, reject) => {
    server.bindAsync(address, serverCredentials(tls), (error, port) => {
      if (error) return reject(error);
      if (address.startsWith("unix:")) return resolve(address);
      resolve(`${address.slice(0, address.lastIndexOf(":"))}:${port}`);
    });
  });
}

/** Bytes of free pool space a calibration writes over. */
const CALIBRATION_REGION_BYTES = 64 * 1024 * 1024;

/** Measures the disk under the pool (O_DIRECT where it can) on free extents, through the pool's own I/O engine. */
async function calibratePool(pool: Pool, log: Logger): Promise<DiskCapability> {
  const { iops, bytesPerSec, direct, why } = await pool.withScratch(CALIBRATION_REGION_BYTES, calibrate);
  if (!direct)
    log.log("warn", "disk calibrated through the page cache: reservations may be admitted past what the disk does", {
      pool: pool.device.path,
      why,
    });
  return { iops, bytesPerSec, source: "calibrated", measuredAtMs: Date.now(), headroom: pool.disk?.headroom ?? DEFAULT_HEADROOM };
}

/** I/Os io_uring may run at once for the disk scheduler: what an NVMe disk needs to reach its rate, and a turn's submits. */
const URING_QUEUE_DEPTH = 64;

/**
 * The disk scheduler's slots: twice the libuv threads that run the thread-pool engine's I/O; for
 * io_uring, a queue as deep as a fast disk wants. 8, once the default for both, capped the daemon at
 * 8 I/Os a turn of the event loop whenever a reservation engaged the scheduler: four volumes doing
 * 4 KiB random reads and writes beside a reservation did 36k IOPS together where one alone did 63k.
 */
function defaultQueueDepth(engine: IoEngine): number {
  if (engine === "io_uring") return URING_QUEUE_DEPTH;
  return 2 * Math.max(1, Number(process.env.UV_THREADPOOL_SIZE) || 4);
}

/**
 * How this engine calls its peers. In a cluster on TLS every caller must be a node of it (mutual TLS), so the
 * engine presents its own certificate and checks peers against the cluster CA; plaintext otherwise.
 */
function peerDialer(options: EngineOptions): PeerDialer {
  if (!options.tls || !options.etcdEndpoints) return new PeerDialer();
  if (!options.tls.clientCaFile) {
    throw new KeelsonError({
      code: "INVALID_ARGUMENT",
      message: "a cluster on TLS needs --tls-client-ca (the cluster CA): engines call each other with their own certificates",
    });
  }
  return new PeerDialer(
    credentials.createSsl(
      readPem(options.tls.clientCaFile, "--tls-client-ca"),
      readPem(options.tls.keyFile, "--tls-key"),
      readPem(options.tls.certFile, "--tls-cert"),
    ),
  );
}

/** What the started pieces need undone: run in reverse order of starting, on close or when a later piece fails. */
class Teardown {
  /** One step per started piece, in the order they started. */
  readonly #steps: Array<() => void | Promise<void>> = [];

  add(step: () => void | Promise<void>): void {
    this.#steps.push(step);
  }

  async run(): Promise<void> {
    for (let step = this.#steps.pop(); step; step = this.#steps.pop()) await step();
  }
}

async function openPool(options: EngineOptions, teardown: Teardown): Promise<Pool> {
  const pool = await Pool.open({
    path: options.poolPath,
    createSizeBytes: options.poolSizeBytes,
    forceFormat: options.forceFormat,
    extentSizeBytes: options.extentSizeBytes,
    overcommitPercent: options.overcommitPercent,
    admit: admitReservation,
    directIo: options.directIo,
  });
  teardown.add(() => pool.close());
  return pool;
}

/** A pool without a known disk capability takes the operator's figures, or is measured once (stored with the pool). */
async function ensureDiskCapability(pool: Pool, options: EngineOptions, log: Logger): Promise<void> {
  if (pool.disk) return;
  if (options.diskCapability) {
    const { iops, bytesPerSec } = options.diskCapability;
    await pool.setDiskCapability({ iops, bytesPerSec, source: "operator", measuredAtMs: Date.now(), headroom: DEFAULT_HEADROOM });
    log.log("info", "disk capability set by the operator", { pool: pool.device.path, iops, bytesPerSec });
    return;
  }
  const cap = await calibratePool(pool, log);
  await pool.setDiskCapability(cap);
  log.log("info", "disk calibrated", { pool: pool.device.path, iops: cap.iops, bytesPerSec: cap.bytesPerSec });
}

/** The export catalog of this engine: its pool's volumes and snapshots, and the replicated volumes attached here. */
type EngineCatalog = TargetCatalog<ReplicatedVolume>;

/** The QoS manager with every volume's policy applied, and the export catalog that serves volumes through it. */
function startQos(pool: Pool, options: EngineOptions, engine: IoEngine): { qos: QosManager; catalog: EngineCatalog } {
  const qos = new QosManager(options.diskQueueDepth ?? defaultQueueDepth(engine));
  for (const v of pool.listVolumes()) qos.apply(v.record.uid, v.record.qos ?? defaultPolicy());
  return { qos, catalog: new TargetCatalog<ReplicatedVolume>(pool, qos) };
}

async function startNbd(catalog: EngineCatalog, options: EngineOptions, teardown: Teardown): Promise<NbdServer> {
  const bufferBytes = options.nbdBufferBytes;
  if (bufferBytes !== undefined && !(Number.isSafeInteger(bufferBytes) && bufferBytes > 0)) {
    throw new KeelsonError({
      code: "INVALID_ARGUMENT",
      message: `NBD buffer budget of ${bufferBytes} bytes: use a positive number of bytes (default ${DEFAULT_NBD_BUFFER_BYTES})`,
    });
  }
  const nbd = new NbdServer((peer) => catalog.forClient(peer), { bufferBytes });
  teardown.add(() => nbd.close());
  const tls = nbdServerTls(options.nbdTls);
  await nbd.listen({ tcp: options.nbdAddress ?? DEFAULT_NBD_ADDRESS, unixSocket: options.nbdSocket, ...(tls ? { tls } : {}) });
  return nbd;
}

/** This node's storage address: where its replicas are served and where it connects to its peers' from. */
function storageHost(options: EngineOptions, grpcAddress: string): string {
  if (options.storageAddress) return options.storageAddress;
  // A control API on a unix socket says nothing of the network: loopback, as the NBD default.
  return grpcAddress.startsWith("unix:")
    ? "127.0.0.1"
    : grpcAddress.slice(0, grpcAddress.lastIndexOf(":")).replace(/^\[|\]$/g, "");
}

/** The cluster CA and this node's certificate, for the replica protocol's mutual TLS; null without TLS. */
function replicaTls(options: EngineOptions): { cert: Buffer; key: Buffer; ca: Buffer } | null {
  if (!options.tls?.clientCaFile) return null;
  return {
    cert: readPem(options.tls.certFile, "--tls-cert"),
    key: readPem(options.tls.keyFile, "--tls-key"),
    ca: readPem(options.tls.clientCaFile, "--tls-client-ca"),
  };
}

/** Who a replica connection's peer is: the node its certificate names (it must be a node's: OU=node), or its address. */
function replicaPeer(peer: NbdPeer): ReplicaPeer {
  if (peer.via !== "tls") return { certifiedNode: null, address: peer.address };
  if (peer.subject?.ou !== "node" || !peer.subject.cn) {
    throw new KeelsonError({
      code: "PERMISSION_DENIED",
      message: `the replica protocol is for engines: certificate ${JSON.stringify(peer.subject)} is no node's (OU=node)`,
    });
  }
  return { certifiedNode: peer.subject.cn, address: peer.address };
}

/**
 * The replica protocol's listener on the storage address (a cluster node only): peers' frontends open this
 * node's replicas there, as etcd says they may; over mutual TLS under the cluster CA when the cluster runs on TLS.
 */
async function startReplicaServer(
  pool: Pool,
  qos: QosManager,
  access: ReplicaAccess,
  options: EngineOptions,
  listenAt: string,
  teardown: Teardown,
): Promise<NbdServer> {
  const authority: ReplicaAuthority = {
    grant: (volume, epoch, fencedAt, peer) => access.grant(volume, epoch, fencedAt, replicaPeer(peer)),
    isNode: async (peer) => {
      await access.nodesOf(replicaPeer(peer), "snapshot copy");
    },
  };
  const tlsFiles = replicaTls(options);
  const server = new NbdServer(new ReplicaCatalog(pool, qos, authority).forClient, {
    bufferBytes: options.nbdBufferBytes,
    ...(tlsFiles ? { mutualTls: tlsFiles } : {}),
  });
  teardown.add(() => server.close());
  await server.listen({ tcp: listenAt });
  return server;
}

/** How this node opens replicas on its peers: from its storage address, with its certificate when the cluster runs on TLS. */
function replicaDial(options: EngineOptions, storage: string): ReplicaDial {
  const tlsFiles = replicaTls(options);
  return { localAddress: storage, ...(tlsFiles ? { tls: tlsFiles } : {}) };
}

/** Prometheus `/metrics` when an address is configured; its address, "" when not served. */
async function startMetrics(options: EngineOptions, sources: EngineMetricsSources, teardown: Teardown): Promise<string> {
  if (!options.metricsAddress) return "";
  const metrics = await serveMetrics({ address: options.metricsAddress, registry: engineRegistry(sources) });
  teardown.add(() => metrics.close());
  return metrics.address;
}

/** The gRPC control API's four services, bound; its bound address (a port 0 resolved). */
async function startControl(ctx: ControlContext, options: EngineOptions, teardown: Teardown): Promise<string> {
  const grpc = new Server();
  teardown.add(() => grpc.forceShutdown());
  // A request that does not decode is the client's fault: INVALID_ARGUMENT, not grpc-js's INTERNAL.
  grpc.addService(withTypedDecodeErrors(VolumeServiceService), volumeService(ctx));
  grpc.addService(withTypedDecodeErrors(SnapshotServiceService), snapshotService(ctx));
  grpc.addService(withTypedDecodeErrors(NodeServiceService), nodeService(ctx));
  grpc.addService(withTypedDecodeErrors(EventServiceService), eventService(ctx.membership, ctx.log, ctx.callerCheck));
  return bindGrpc(grpc, options.grpcAddress ?? DEFAULT_GRPC_ADDRESS, options.tls);
}

/** What {@link joinCluster} registers this node with. */
interface JoinInputs {
  ctx: ControlContext;
  /** The control API's bound address: peers call this node there, so the node record holds it. */
  grpcAddress: string;
  /** The replica protocol listener's bound address (peers open this node's replicas there). */
  replicaAddress: string;
  /** This node's storage address. */
  storage: string;
  peers: PeerDialer;
  onLeadership: (leader: boolean) => void;
}

/** Joins the cluster at `--etcd` (null for a single engine); leaving closes this node's attachments first. */
async function joinCluster(options: EngineOptions, inputs: JoinInputs, teardown: Teardown): Promise<ClusterMembership | null> {
  if (!options.etcdEndpoints) return null;
  const { ctx, grpcAddress } = inputs;
  const membership = await ClusterMembership.join({
    endpoints: options.etcdEndpoints,
    etcdTls: etcdClientTls(options.etcdTls),
    leaseTtlS: options.leaseTtlS,
    log: ctx.log,
    peers: inputs.peers,
    replicaDial: replicaDial(options, inputs.storage),
    node: {
      nodeId: ctx.nodeId,
      controlAddress: grpcAddress,
      nbdAddress: ctx.nbd.tcpAddress,
      storageAddress: inputs.storage,
      replicaAddress: inputs.replicaAddress,
      zone: options.zone ?? "",
      version: ENGINE_VERSION,
    },
    onLeadership: (leader) => {
      ctx.log.log("info", leader ? "became leader" : "lost leadership", { node: ctx.nodeId });
      inputs.onLeadership(leader);
    },
  });
  teardown.add(async () => {
    ctx.attacher.close();
    for (const rv of ctx.frontends.values()) rv.close();
    await membership.close();
  });
  return membership;
}

/** A cluster node's background work: the leader's reconciler and idle repairs, and this node's disk reports. */
interface ClusterDuties {
  /** Starts the leader's work when this node becomes leader, stops it when it stops being leader. */
  leadership(leader: boolean): void;
}

async function startClusterDuties(
  m: ClusterMembership,
  ctx: ControlContext,
  inputs: { options: EngineOptions; space: SpaceWatch },
  teardown: Teardown,
): Promise<ClusterDuties> {
  const { pool, log } = ctx;
  const { options, space } = inputs;
  // Space crossings become events every Watch in the cluster sees.
  space.setSink(new SpaceAlertPublisher(m, pool.layout.uid, log));
  const replaceAfterMs = options.replaceReplicaAfterMs ?? DEFAULT_REPLACE_AFTER_MS;
  const repairer = new IdleVolumeRepairer(
    m,
    (name) =>
      openRepairFrontend(m, name, {
        replicaTimeoutMs: DEFAULT_REPLICA_TIMEOUT_MS,
        rebuildThrottle: ctx.rebuildThrottle,
        openLocal: ctx.openLocal,
        readOnly: false,
        takeover: false,
      }),
    log,
  );
  const reconciler = new Reconciler(m.metadata, log, () => repairDegradedVolumes(m, replaceAfterMs, repairer));
  if (m.isLeader) reconciler.start();
  const disks = new DiskReporter(m, () => diskReport(pool), log);
  teardown.add(() => {
    space.setSink(null);
    reconciler.stop();
    repairer.stop();
    disks.stop();
  });
  await disks.start();
  return {
    leadership: (leader) => {
      if (leader) reconciler.start();
      else {
        reconciler.stop();
        repairer.stop();
      }
    },
  };
}

/** What this node's disk report says about its pool. */
function diskReport(pool: Pool): Omit<DiskRecord, "nodeId" | "updatedAtMs"> {
  const space = pool.space();
  const provisioning = pool.provisioning();
  return {
    poolUid: pool.layout.uid,
    path: pool.device.path,
    totalBytes: space.totalBytes,
    freeBytes: space.freeBytes,
    volumeCount: pool.listVolumes().length,
    snapshotCount: pool.listSnapshots().length,
    provisionedBytes: provisioning.provisionedBytes,
    provisionLimitBytes: provisioning.limitBytes,
    overcommitPercent: provisioning.overcommitPercent,
  };
}

/** What the control API serves from, complete: the membership is read through a getter, null until joined. */
function controlContext(
  parts: Pick<ControlContext, "pool" | "nbd" | "qos" | "log" | "membership" | "replicaAccess">,
  catalog: EngineCatalog,
  options: EngineOptions,
): ControlContext {
  const frontends = catalog.frontends;
  const rebuildThrottle = new RebuildThrottle(options.rebuildBytesPerSec ?? 0);
  // The frontend reaches this node's own replica in-process, through the same stages a peer gets over NBD.
  const openLocal: ControlContext["openLocal"] = (name) => openLocalReplica(parts.pool, parts.qos, name);
  const nodeId = options.nodeId ?? os.hostname();
  return {
    ...parts,
    frontends,
    rebuildThrottle,
    openLocal,
    attacher: new VolumeAttacher({
      frontends,
      rebuildThrottle,
      openLocal,
      qos: { apply: (name, policy) => catalog.applyQos(name, policy), remove: (name) => catalog.removeQos(name) },
      nodeId,
      log: parts.log,
    }),
    zone: options.zone ?? "",
    qosClasses: options.qosClasses ?? new Map<string, QosPolicy>(),
    calibrate: () => calibratePool(parts.pool, parts.log),
    nodeId,
    version: ENGINE_VERSION,
    callerCheck: callerCheckOf(options.tls),
  };
}

/**
 * Opens the pool and serves it over NBD and the gRPC control API; with `etcdEndpoints`, joins the cluster.
 * Pieces start in dependency order and stop in reverse order; a piece that fails to start stops those before it.
 */
export async function startEngine(options: EngineOptions): Promise<StartedEngine> {
  const log = options.log ?? jsonLogger("keelsond");
  const peers = peerDialer(options);
  // Before anything is opened: a refused listen address must not format a pool first.
  checkControlListen({
    address: options.grpcAddress ?? DEFAULT_GRPC_ADDRESS,
    tls: options.tls !== undefined,
    insecure: options.insecure ?? false,
    callerCheck: callerCheckOf(options.tls),
    log,
  });
  const teardown = new Teardown();
  teardown.add(watchLoopStalls(log, { pool: options.poolPath }));
  try {
    const io = useIoEngine(options.ioEngine ?? ioEngineFromEnv());
    log.log("info", "disk I/O engine", { engine: io.engine, ...(io.note ? { note: io.note } : {}) });
    const untuned = tuneAllocator();
    if (untuned)
      log.log("warn", "malloc not tuned: socket reads fault their pages in again after each collection", { why: untuned });
    const pool = await openPool(options, teardown);
    await ensureDiskCapability(pool, options, log);
    const { qos, catalog } = startQos(pool, options, io.engine);
    const nbd = await startNbd(catalog, options, teardown);
    const space = new SpaceWatch(pool, log);
    teardown.add(() => space.stop());
    const metricsSources = { pool, qos, alarm: space.alarm, nbd, frontends: catalog.frontends };
    const metricsAddress = await startMetrics(options, metricsSources, teardown);
    // The control API serves before the join (the node record holds its bound address): until then it sees no cluster.
    let served: ClusterMembership | null = null;
    // Replicas are served before the join too (the node record holds the address); until then every open is refused.
    let joined: ClusterMembership | null = null;
    const replicaAccess = options.etcdEndpoints
      ? new ReplicaAccess(() => {
          if (joined) return joined.metadata;
          throw new KeelsonError({ code: "UNAVAILABLE", message: "this node has not joined its cluster yet" });
        }, log)
      : null;
    const ctx = controlContext({ pool, nbd, qos, log, membership: () => served, replicaAccess }, catalog, options);
    const grpcAddress = await startControl(ctx, options, teardown);
    const storage = storageHost(options, grpcAddress);
    const replicas = replicaAccess
      ? await startReplicaServer(
          pool,
          qos,
          replicaAccess,
          options,
          options.replicaAddress ?? `${storage}:${DEFAULT_REPLICA_PORT}`,
          teardown,
        )
      : null;
    let duties: ClusterDuties | null = null;
    const onLeadership = (leader: boolean) => duties?.leadership(leader);
    const replicaAddress = replicas?.tcpAddress ?? "";
    const membership = await joinCluster(options, { ctx, grpcAddress, replicaAddress, storage, peers, onLeadership }, teardown);
    joined = membership;
    if (membership) duties = await startClusterDuties(membership, ctx, { options, space }, teardown);
    // Checked from here on, so that a cluster node's first crossings (a pool found past 80% at start) reach the events too.
    space.start();
    // The control API sees the cluster once this node's duties run.
    served = membership;
    log.log("info", "engine started", {
      pool: pool.device.path,
      volumes: pool.listVolumes().length,
      snapshots: pool.listSnapshots().length,
      foldsFinishedAtOpen: pool.foldsFinishedAtOpen,
      grpcAddress,
      nbdAddress: nbd.tcpAddress,
      nbdSocket: nbd.unixSocket,
      replicaAddress,
      metricsAddress,
      etcd: options.etcdEndpoints ?? "",
    });
    let closing: Promise<void> | null = null;
    const close = (): Promise<void> => {
      closing ??= teardown.run().then(() => log.log("info", "engine stopped", { pool: pool.device.path }));
      return closing;
    };
    const started = { grpcAddress, nbdAddress: nbd.tcpAddress, nbdSocket: nbd.unixSocket, metricsAddress, membership, pool };
    return { ...started, close, [Symbol.asyncDispose]: close };
  } catch (error) {
    await teardown.run();
    throw error;
  }
}

/** Writes the addresses a started engine serves on, for scripts and tests that started it with port 0. */
export function writeReadyFile(path: string, engine: StartedEngine): void {
  const ready = {
    pid: process.pid,
    grpcAddress: engine.grpcAddress,
    nbdAddress: engine.nbdAddress,
    nbdSocket: engine.nbdSocket,
    metricsAddress: engine.metricsAddress,
  };
  fs.writeFileSync(`${path}.tmp`, JSON.stringify(ready));
  fs.renameSync(`${path}.tmp`, path);
}
