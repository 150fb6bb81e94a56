import fs from "node:fs";
import { parseArgs } from "node:util";
import { isKeelsonError, KeelsonError } from "@keelson/sdk";
import {
  type ControlTls,
  DEFAULT_GRPC_ADDRESS,
  DEFAULT_NBD_ADDRESS,
  DEFAULT_REPLICA_PORT,
  startEngine,
  validateOvercommitPercent,
  writeReadyFile,
} from "../daemon/engine.js";
import type { EtcdTlsFiles, NbdTlsFiles } from "../daemon/engine-tls.js";
import { type IoEngineChoice, isIoEngineChoice } from "../device-io/device-io.js";
import { parseQosClasses } from "../qos/policy.js";
import { messageOf } from "../util/errors.js";
import { jsonLogger } from "../util/log.js";
import { parseSizeBytes } from "../util/size.js";

const USAGE = `usage: keelsond --pool PATH [options]

  --pool PATH            block device or file of the disk pool (required)
  --pool-size SIZE       create the pool file with this size if it does not exist (e.g. 10G)
  --force-format         format a device that holds foreign data (destroys it)
  --extent-size SIZE     allocation unit of a pool formatted now (default 1M; power of two, 16K-64M)
  --overcommit-percent N the pool's volumes may together be N% of its data capacity in size
                         (thin provisioning; an integer >= 100, default 200)
  --grpc-listen ADDR     control API, host:port or unix:/path (default ${DEFAULT_GRPC_ADDRESS})
  --nbd-listen ADDR      NBD over TCP, host:port; "" disables (default ${DEFAULT_NBD_ADDRESS})
  --nbd-socket PATH      NBD over a unix socket
  --nbd-buffer SIZE      request payloads and reply buffers all NBD connections may hold at once;
                         past it requests wait and their connections stop being read (default 256M)
  --node-id ID           node identity (default: hostname)
  --qos-classes FILE     JSON of named QoS policies, e.g. {"gold": {"reservationIops": 3000, "weight": 4}}
  --disk-queue-depth N   I/Os the disk scheduler lets run at once (default 64 on io_uring, 2 x libuv threads otherwise)
  --metrics-listen ADDR  Prometheus /metrics over HTTP, host:port (default: not served)
  --etcd URLS            join the cluster whose metadata is in this etcd (comma-separated client URLs)
  --storage-address HOST address for replica traffic (default: the control address's host):
                         this node serves its replicas there and connects to its peers' from it
  --replica-listen ADDR  the replica protocol's listener, host:port (default: the storage
                         address, port ${DEFAULT_REPLICA_PORT}); engines only, over mutual TLS
                         under the cluster CA when --tls-client-ca is given
  --zone ZONE            topology label used to spread replicas
  --lease-ttl SECONDS    liveness lease of this node in etcd (default 5)
  --replace-replica-after SECONDS
                         the leader places a replica on another node once its node
                         has been down this long (default 60)
  --tls-cert FILE --tls-key FILE
                         serve the control API over TLS with this PEM certificate and key
  --tls-client-ca FILE   and require client certificates signed by this CA (mutual TLS); each caller's
                         role is its certificate's subject OU: admin, node or read-only
  --insecure             serve the control API on a non-loopback address without TLS (refused
                         otherwise: every caller would be admin); logged as a warning
  --etcd-ca FILE --etcd-cert FILE --etcd-key FILE
                         reach an etcd on TLS (https:// URLs) with this node's certificate
  --nbd-tls-cert FILE --nbd-tls-key FILE
                         NBD over TCP requires TLS (NBD_OPT_STARTTLS) with this certificate
  --nbd-tls-client-ca FILE
                         and a client certificate signed by this CA
  --disk-capability IOPS:SIZE
                         what the disk can do (e.g. 50000:1G): a new pool takes it instead
                         of measuring the disk (the measurement loads the machine for ~1 s)
  --rebuild-rate SIZE    bytes a second this node's rebuilds may copy, all volumes together,
                         e.g. 100M (default 0: no limit)
  --io ENGINE            disk I/O: io_uring, threadpool or auto (default: KEELSON_IO, else auto:
                         io_uring where the addon loads and the kernel allows it); shown in node info
  --direct-io on|off     read and write volumes' blocks with O_DIRECT, bypassing the page cache
                         (default: KEELSON_DIRECT_IO, else off; needs the io_uring engine); shown
                         in node info as the pool's directIo
  --ready-file PATH      write {pid, grpcAddress, nbdAddress, nbdSocket, metricsAddress} as JSON once serving
`;

const log = jsonLogger("keelsond");

async function main(): Promise<void> {
  const { values } = parseArgs({
    options: {
      pool: { type: "string" },
      "pool-size": { type: "string" },
      "force-format": { type: "boolean" },
      "extent-size": { type: "string" },
      "overcommit-percent": { type: "string" },
      "grpc-listen": { type: "string" },
      "nbd-listen": { type: "string" },
      "nbd-socket": { type: "string" },
      "nbd-buffer": { type: "string" },
      "node-id": { type: "string" },
      "qos-classes": { type: "string" },
      "disk-queue-depth": { type: "string" },
      "metrics-listen": { type: "string" },
      etcd: { type: "string" },
      "storage-address": { type: "string" },
      "replica-listen": { type: "string" },
      zone: { type: "string" },
      "lease-ttl": { type: "string" },
      "replace-replica-after": { type: "string" },
      "rebuild-rate": { type: "string" },
      "direct-io": { type: "string" },
      "disk-capability": { type: "string" },
      "tls-cert": { type: "string" },
      "tls-key": { type: "string" },
      "tls-client-ca": { type: "string" },
      insecure: { type: "boolean" },
      "etcd-ca": { type: "string" },
      "etcd-cert": { type: "string" },
      "etcd-key": { type: "string" },
      "nbd-tls-cert": { type: "string" },
      "nbd-tls-key": { type: "string" },
      "nbd-tls-client-ca": { type: "string" },
      io: { type: "string" },
      "ready-file": { type: "string" },
      help: { type: "boolean", short: "h" },
    },
  });
  if (values.help || !values.pool) {
    process.stderr.write(USAGE);
    process.exit(values.help ? 0 : 2);
  }
  const overcommitPercent = usageChecked(() => overcommitPercentFlag(values["overcommit-percent"]));
  const ioEngine = usageChecked(() => ioEngineFlag(values.io));
  const directIo = usageChecked(() => directIoFlag(values["direct-io"]));
  const engine = await startEngine({
    poolPath: values.pool,
    poolSizeBytes: values["pool-size"] ? parseSizeBytes(values["pool-size"]) : undefined,
    forceFormat: values["force-format"],
    extentSizeBytes: values["extent-size"] ? parseSizeBytes(values["extent-size"]) : undefined,
    overcommitPercent,
    grpcAddress: values["grpc-listen"],
    nbdAddress: values["nbd-listen"],
    nbdSocket: values["nbd-socket"],
    nbdBufferBytes: values["nbd-buffer"] === undefined ? undefined : parseSizeBytes(values["nbd-buffer"]),
    nodeId: values["node-id"],
    qosClasses: values["qos-classes"]
      ? parseQosClasses(fs.readFileSync(values["qos-classes"], "utf8"), values["qos-classes"])
      : undefined,
    diskQueueDepth: values["disk-queue-depth"] ? Number(values["disk-queue-depth"]) : undefined,
    metricsAddress: values["metrics-listen"],
    etcdEndpoints: values.etcd,
    storageAddress: values["storage-address"],
    replicaAddress: values["replica-listen"],
    zone: values.zone,
    leaseTtlS: seconds("--lease-ttl", values["lease-ttl"]),
    replaceReplicaAfterMs: mul1000(seconds("--replace-replica-after", values["replace-replica-after"])),
    rebuildBytesPerSec: values["rebuild-rate"] === undefined ? undefined : parseSizeBytes(values["rebuild-rate"]),
    diskCapability: values["disk-capability"] === undefined ? undefined : parseCapability(values["disk-capability"]),
    tls: tlsOptions(values["tls-cert"], values["tls-key"], values["tls-client-ca"]),
    insecure: values.insecure ?? false,
    etcdTls: etcdTlsOptions(values["etcd-ca"], values["etcd-cert"], values["etcd-key"]),
    nbdTls: nbdTlsOptions(values["nbd-tls-cert"], values["nbd-tls-key"], values["nbd-tls-client-ca"]),
    ioEngine,
    directIo,
    log,
  });
  if (values["ready-file"]) writeReadyFile(values["ready-file"], engine);
  const stop = (signal: string): void => {
    log.log("info", "stopping", { signal });
    engine.close().then(
      () => process.exit(0),
      (error: unknown) => {
        log.log("error", "clean stop failed", { error: String(error) });
        process.exit(1);
      },
    );
  };
  process.once("SIGTERM", () => stop("SIGTERM"));
  process.once("SIGINT", () => stop("SIGINT"));
}

/** `parse()`, or the usage and exit status 2 when the flag it reads is malformed (a usage error, not a failed start). */
function usageChecked<T>(parse: () => T): T {
  try {
    return parse();
  } catch (error) {
    process.stderr.write(`keelsond: ${messageOf(error)}\n\n${USAGE}`);
    process.exit(2);
  }
}

/** --overcommit-percent: decimal digits only (so "150.5", "2e2" and "" are refused, not rounded), then the pool's range. */
function overcommitPercentFlag(value: string | undefined): number | undefined {
  if (value === undefined) return undefined;
  return validateOvercommitPercent(/^\d+$/.test(value) ? Number(value) : value);
}

/** --io: an engine name; unset leaves the choice to KEELSON_IO (else auto). */
function ioEngineFlag(value: string | undefined): IoEngineChoice | undefined {
  if (value === undefined) return undefined;
  if (!isIoEngineChoice(value))
    throw new KeelsonError({
      code: "INVALID_ARGUMENT",
      message: `--io ${JSON.stringify(value)}: expected io_uring, threadpool or auto`,
    });
  return value;
}

/** --direct-io: on or off; unset leaves it to KEELSON_DIRECT_IO (else off). */
function directIoFlag(value: string | undefined): boolean | undefined {
  if (value === undefined) return undefined;
  if (value === "on" || value === "off") return value === "on";
  throw new KeelsonError({ code: "INVALID_ARGUMENT", message: `--direct-io ${JSON.stringify(value)}: expected on or off` });
}

/** --tls-cert and --tls-key go together; --tls-client-ca needs them. */
function tlsOptions(cert?: string, key?: string, clientCa?: string): ControlTls | undefined {
  if (!cert && !key && !clientCa) return undefined;
  if (!cert || !key) {
    throw new KeelsonError({ code: "INVALID_ARGUMENT", message: "--tls-cert and --tls-key must be given together" });
  }
  return { certFile: cert, keyFile: key, ...(clientCa ? { clientCaFile: clientCa } : {}) };
}

/** --etcd-ca, --etcd-cert and --etcd-key go together (etcd on TLS checks its clients' certificates). */
function etcdTlsOptions(ca?: string, cert?: string, key?: string): EtcdTlsFiles | undefined {
  if (!ca && !cert && !key) return undefined;
  if (!ca || !cert || !key) {
    throw new KeelsonError({ code: "INVALID_ARGUMENT", message: "--etcd-ca, --etcd-cert and --etcd-key must be given together" });
  }
  return { caFile: ca, certFile: cert, keyFile: key };
}

/** --nbd-tls-cert and --nbd-tls-key go together; --nbd-tls-client-ca needs them. */
function nbdTlsOptions(cert?: string, key?: string, clientCa?: string): NbdTlsFiles | undefined {
  if (!cert && !key && !clientCa) return undefined;
  if (!cert || !key) {
    throw new KeelsonError({ code: "INVALID_ARGUMENT", message: "--nbd-tls-cert and --nbd-tls-key must be given together" });
  }
  return { certFile: cert, keyFile: key, ...(clientCa ? { clientCaFile: clientCa } : {}) };
}

/** `IOPS:SIZE` (per second) from --disk-capability; INVALID_ARGUMENT otherwise. */
function parseCapability(value: string): { iops: number; bytesPerSec: number } {
  const [iops, bw, extra] = value.split(":");
  const n = Number(iops);
  if (extra !== undefined || bw === undefined || !Number.isInteger(n) || n <= 0) {
    throw new KeelsonError({
      code: "INVALID_ARGUMENT",
      message: `--disk-capability ${JSON.stringify(value)}: use IOPS:BANDWIDTH, e.g. 50000:1G`,
    });
  }
  const bytesPerSec = parseSizeBytes(bw);
  if (bytesPerSec <= 0)
    throw new KeelsonError({ code: "INVALID_ARGUMENT", message: "--disk-capability bandwidth must be positive" });
  return { iops: n, bytesPerSec };
}

/** A positive number of seconds from a flag; INVALID_ARGUMENT otherwise. */
function seconds(flag: string, value: string | undefined): number | undefined {
  if (value === undefined) return undefined;
  const n = Number(value);
  if (!Number.isFinite(n) || n <= 0) {
    throw new KeelsonError({
      code: "INVALID_ARGUMENT",
      message: `${flag} takes a positive number of seconds, not ${JSON.stringify(value)}`,
    });
  }
  return n;
}

function mul1000(s: number | undefined): number | undefined {
  return s === undefined ? undefined : s * 1000;
}

main().catch((error: unknown) => {
  log.log("error", "keelsond failed to start", {
    code: isKeelsonError(error) ? error.code : undefined,
    error: messageOf(error),
  });
  process.exit(1);
});
