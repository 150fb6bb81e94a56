import fs from "node:fs";
import os from "node:os";
import { credentials, Server, ServerCredentials } from "@grpc/grpc-js";
import { KeelsonError } from "@keelson/sdk";
import { EventServiceService, NodeServiceService, SnapshotServiceService, VolumeServiceService } from "@keelson/sdk/experimental";
import { DiskReporter } from "../cluster/disk-reports.js";
import { ClusterMembership } from "../cluster/membership.js";
import { usePeerCredentials } from "../cluster/peers.js";
import { Reconciler } from "../cluster/reconciler.js";
import { type ControlContext, nodeService, snapshotService, volumeService } from "../control/control-service.js";
import { eventService } from "../events/event-feed.js";
import { collectMetrics, serveMetrics } from "../metrics/prometheus.js";
import { NbdServer } from "../nbd/server.js";
import { DEFAULT_HEADROOM, type DiskCapability } from "../qos/admission.js";
import { calibrate } from "../qos/calibrate.js";
import { defaultPolicy, type QosPolicy } from "../qos/policy.js";
import { QosManager } from "../qos/qos-manager.js";
import { DEFAULT_REPLACE_AFTER_MS, openRepairFrontend, repairDegradedVolumes } from "../replication/cluster-volumes.js";
import { IdleVolumeRepairer } from "../replication/idle-repair.js";
import { RebuildThrottle } from "../replication/rebuild-throttle.js";
import { DEFAULT_REPLICA_TIMEOUT_MS, type ReplicatedVolume } from "../replication/replicated-volume.js";
import { Pool } from "../store/pool.js";
import { openLocalReplica, TargetCatalog } from "../target/catalog.js";
import { jsonLogger, type Logger } from "../util/log.js";

/** Version reported by GetNode. */
export const ENGINE_VERSION = "0.1.0";
export const DEFAULT_GRPC_ADDRESS = "127.0.0.1:7420";
export const DEFAULT_NBD_ADDRESS = "127.0.0.1:10809";

/** Options of {@link startEngine}. */
export interface EngineOptions {
  /** Block device or file of the disk pool. */
  poolPath: string;
  /** Creates the pool file with this size when it does not exist. */
  poolSizeBytes?: number;
  /** Formats a device holding foreign data (destroys it). */
  forceFormat?: boolean;
  /** Extent size of a pool formatted now (default 1 MiB). */
  extentSizeBytes?: number;
  /** Named QoS policies volumes may be created with. */
  qosClasses?: ReadonlyMap<string, QosPolicy>;
  /** I/Os the disk scheduler lets run at once (default: twice the libuv thread pool). */
  diskQueueDepth?: number;
  /** Prometheus `/metrics` over HTTP, `host:port`; none when absent. */
  metricsAddress?: string;
  /** etcd client URLs (comma-separated): join that cluster; a single engine without. */
  etcdEndpoints?: string;
  /** Address for replica (storage) traffic; default the control address's host. */
  storageAddress?: string;
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
  nodeId?: string;
  log?: Logger;
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

function readPem(file: string, what: string): Buffer {
  try {
    return fs.readFileSync(file);
  } catch (error) {
    throw new KeelsonError({ code: "INVALID_ARGUMENT", message: `${what} ${file}: ${(error as Error).message}` });
  }
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

/** Measures the pool's disk through the engine's own I/O path, on free extents. */
async function calibratePool(pool: Pool): Promise<DiskCapability> {
  const measured = await pool.withScratch(CALIBRATION_REGION_BYTES, calibrate);
  return { ...measured, source: "calibrated", measuredAtMs: Date.now(), headroom: pool.disk?.headroom ?? DEFAULT_HEADROOM };
}

function defaultQueueDepth(): number {
  return 2 * Math.max(1, Number(process.env.UV_THREADPOOL_SIZE) || 4);
}

/** Opens the pool and serves it over NBD and the gRPC control API. */
export async function startEngine(options: EngineOptions): Promise<StartedEngine> {
  const log = options.log ?? jsonLogger("keelsond");
  if (options.tls && options.etcdEndpoints) {
    // Engines call each other's API too: in a cluster every caller must be a node of it (mutual TLS).
    if (!options.tls.clientCaFile) {
      throw new KeelsonError({
        code: "INVALID_ARGUMENT",
        message: "a cluster on TLS needs --tls-client-ca (the cluster CA): engines call each other with their own certificates",
      });
    }
    usePeerCredentials(
      credentials.createSsl(
        readPem(options.tls.clientCaFile, "--tls-client-ca"),
        readPem(options.tls.keyFile, "--tls-key"),
        readPem(options.tls.certFile, "--tls-cert"),
      ),
    );
  }
  const pool = await Pool.open({
    path: options.poolPath,
    createSizeBytes: options.poolSizeBytes,
    forceFormat: options.forceFormat,
    extentSizeBytes: options.extentSizeBytes,
  });
  const qos = new QosManager(options.diskQueueDepth ?? defaultQueueDepth());
  for (const v of pool.listVolumes()) qos.apply(v.record.uid, v.record.qos ?? defaultPolicy());
  const catalog = new TargetCatalog<ReplicatedVolume>(pool, qos);
  const nbd = new NbdServer(catalog);
  const grpc = new Server();
  try {
    if (!pool.disk && options.diskCapability) {
      const { iops, bytesPerSec } = options.diskCapability;
      await pool.setDiskCapability({
        iops,
        bytesPerSec,
        source: "operator",
        measuredAtMs: Date.now(),
        headroom: DEFAULT_HEADROOM,
      });
      log.log("info", "disk capability set by the operator", { pool: pool.device.path, iops, bytesPerSec });
    } else if (!pool.disk) {
      // A disk joining the pool is measured once; the result is stored with the pool.
      const cap = await calibratePool(pool);
      await pool.setDiskCapability(cap);
      log.log("info", "disk calibrated", { pool: pool.device.path, iops: cap.iops, bytesPerSec: cap.bytesPerSec });
    }
    await nbd.listen({ tcp: options.nbdAddress ?? DEFAULT_NBD_ADDRESS, unixSocket: options.nbdSocket });
    const ctx: ControlContext = {
      pool,
      nbd,
      qos,
      membership: null,
      frontends: catalog.frontends,
      rebuildThrottle: new RebuildThrottle(options.rebuildBytesPerSec ?? 0),
      openLocal: (name) => openLocalReplica(pool, qos, name),
      zone: options.zone ?? "",
      qosClasses: options.qosClasses ?? new Map<string, QosPolicy>(),
      calibrate: () => calibratePool(pool),
      nodeId: options.nodeId ?? os.hostname(),
      version: ENGINE_VERSION,
      log,
    };
    grpc.addService(VolumeServiceService, volumeService(ctx));
    grpc.addService(SnapshotServiceService, snapshotService(ctx));
    grpc.addService(NodeServiceService, nodeService(ctx));
    grpc.addService(
      EventServiceService,
      eventService(() => ctx.membership, log),
    );
    const grpcAddress = await bindGrpc(grpc, options.grpcAddress ?? DEFAULT_GRPC_ADDRESS, options.tls);
    const metrics = options.metricsAddress ? await serveMetrics(options.metricsAddress, () => collectMetrics(pool, qos)) : null;
    const reconcilerLog = log;
    let reconciler: Reconciler | null = null;
    let disks: DiskReporter | null = null;
    let repairer: IdleVolumeRepairer | null = null;
    const membership = options.etcdEndpoints
      ? await ClusterMembership.join({
          endpoints: options.etcdEndpoints,
          leaseTtlS: options.leaseTtlS,
          log,
          node: {
            nodeId: ctx.nodeId,
            controlAddress: grpcAddress,
            nbdAddress: nbd.tcpAddress,
            storageAddress: options.storageAddress ?? grpcAddress.slice(0, grpcAddress.lastIndexOf(":")),
            zone: options.zone ?? "",
            version: ENGINE_VERSION,
          },
          onLeadership: (leader) => {
            log.log("info", leader ? "became leader" : "lost leadership", { node: ctx.nodeId });
            if (leader) reconciler?.start();
            else {
              reconciler?.stop();
              repairer?.stop();
            }
          },
        })
      : null;
    if (membership) {
      const m = membership;
      const replaceAfterMs = options.replaceReplicaAfterMs ?? DEFAULT_REPLACE_AFTER_MS;
      const idle = new IdleVolumeRepairer(
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
      repairer = idle;
      reconciler = new Reconciler(membership.client, reconcilerLog, () => repairDegradedVolumes(m, replaceAfterMs, idle));
      if (membership.isLeader) reconciler.start();
      disks = new DiskReporter(
        membership,
        () => {
          const space = pool.space();
          return {
            poolUid: pool.layout.uid,
            path: pool.device.path,
            totalBytes: space.totalBytes,
            freeBytes: space.freeBytes,
            volumeCount: pool.listVolumes().length,
            snapshotCount: pool.listSnapshots().length,
          };
        },
        log,
      );
      await disks.start();
    }
    ctx.membership = membership;
    log.log("info", "engine started", {
      pool: pool.device.path,
      volumes: pool.listVolumes().length,
      snapshots: pool.listSnapshots().length,
      foldsFinishedAtOpen: pool.foldsFinishedAtOpen,
      grpcAddress,
      nbdAddress: nbd.tcpAddress,
      nbdSocket: nbd.unixSocket,
      metricsAddress: metrics?.address ?? "",
      etcd: options.etcdEndpoints ?? "",
    });
    let closing: Promise<void> | null = null;
    const close = (): Promise<void> => {
      closing ??= (async () => {
        reconciler?.stop();
        repairer?.stop();
        disks?.stop();
        for (const rv of catalog.frontends.values()) rv.close();
        await membership?.close();
        grpc.forceShutdown();
        await metrics?.close();
        await nbd.close();
        await pool.close();
        log.log("info", "engine stopped", { pool: pool.device.path });
      })();
      return closing;
    };
    return {
      grpcAddress,
      nbdAddress: nbd.tcpAddress,
      nbdSocket: nbd.unixSocket,
      metricsAddress: metrics?.address ?? "",
      membership,
      pool,
      close,
      [Symbol.asyncDispose]: close,
    };
  } catch (error) {
    grpc.forceShutdown();
    await nbd.close();
    await pool.close();
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
