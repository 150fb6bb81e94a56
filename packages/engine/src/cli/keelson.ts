#!/usr/bin/env node
import fs from "node:fs";
import path from "node:path";
import { parseArgs } from "node:util";
import { type ChannelCredentials, credentials } from "@grpc/grpc-js";
import {
  type Attachment,
  createClient,
  isKeelsonError,
  type KeelsonClient,
  KeelsonError,
  type QosLimits,
  type QosPolicy,
  type Snapshot,
  type Volume,
  type VolumeSource,
} from "@keelson/sdk";
import { DEFAULT_GRPC_ADDRESS, validateOvercommitPercent } from "../daemon/engine.js";
import { LocalCluster } from "../local-cluster/local-cluster.js";
import { messageOf } from "../util/errors.js";
import { formatBytes, parseSizeBytes } from "../util/size.js";

const USAGE = `usage: keelson [--address ADDR] [--json] <command>

commands:
  volume create NAME --size SIZE [--replicas N] [--replicated] [--min-in-sync Q] [--label k=v]... [QOS]
                                                     create a thin volume (idempotent); N > 1 needs a cluster:
                                                     one replica on each of N nodes; a write is acknowledged
                                                     once Q in-sync replicas hold it (default 2 from 3 up);
                                                     --replicated: a cluster volume even with one replica
                                                     (attachable on any node, the replicated frontend)
  volume attach NAME [--node ID] [--read-only] [--takeover] [--replica-timeout MS]
                                                     serve a replicated volume from a node (default: this one);
                                                     writable: a new epoch, one node at a time (--takeover
                                                     fences a lost node's); --read-only: many nodes, no writer
  volume detach NAME [--node ID] [--force]           stop serving it there (a writer flushes first; --force
                                                     even with NBD clients connected)
  volume attachments NAME                            where a volume is attached (etcd's record)
  volume attachment NAME                             replicas of an attached volume: state, rebuild progress
  volume declare-in-sync NAME --node ID --reason TEXT
                                                     after a disaster (no in-sync replica will answer again):
                                                     ID's replica becomes the only one in sync; what it lacks
                                                     is lost. Detached volumes only; recorded in the record
  volume qos NAME [QOS]                              replace a volume's QoS policy, live
  volume clone NAME --from VOLUME[@SNAPSHOT] [--size SIZE]
                                                     clone a snapshot, or a live volume (implicit snapshot)
  volume revert NAME --to SNAPSHOT                   put a disconnected volume back to its snapshot
  volume list                                        list volumes
  volume get NAME                                    show one volume
  volume resize NAME --size SIZE                     grow a volume online
  volume delete NAME [--force]                       delete a volume, every replica (--force disconnects clients, detaches it)
  snapshot create VOLUME@NAME [--label k=v]...       take a crash-consistent snapshot (O(1))
  snapshot list [VOLUME]                             list snapshots
  snapshot get VOLUME@NAME                           show one snapshot
  snapshot delete VOLUME@NAME                        delete a snapshot (its data folds into the next layer)
  up [--nodes N] [--dir DIR] [--loopback] [--tls] [--disk-size SIZE] [--overcommit-percent N]
                                                     start a local cluster: etcd + N keelsond (as root: a network
                                                     namespace, address and loop-device disk per node; --tls:
                                                     control APIs on mutual TLS and etcd on TLS with client
                                                     certificates, under a CA made for it: certificates per
                                                     role in DIR/tls, admin.pem for this CLI);
                                                     --disk-size: each node's disk, sparse (default 1G, 64M-16T);
                                                     --overcommit-percent: each node's keelsond limit (default 200)
  down [--dir DIR]                                   stop it and remove everything it made
  cluster nodes                                      nodes of the cluster with liveness and the leader
  node info                                          pool space, disk capability and endpoints of the engine
  node capability --iops N --bandwidth SIZE [--headroom F] | --recalibrate
                                                     set (or measure again) what the disk can do

QOS (any of):
  --qos-class NAME                 a class from keelsond --qos-classes; the flags below override it
  --limit KEY=RATE[/BURST]         KEY: total-iops, read-iops, write-iops, read-bw, write-bw
                                   (bw rates take sizes per second: --limit write-bw=50M)
  --reserve-iops N                 guaranteed IOPS (admitted against the disk's capability)
  --reserve-bw SIZE                guaranteed bytes per second
  --weight N                       share of what is left beyond reservations (default 1)

options:
  --address ADDR   control API of the engine (default $KEELSON_ADDRESS or ${DEFAULT_GRPC_ADDRESS})
  --tls-ca FILE    call it over TLS, checking its certificate against this CA; with --tls-cert FILE
                   and --tls-key FILE, present a client certificate (mutual TLS). A cluster made by
                   \`keelson up --tls\` keeps them in DIR/tls (ca.pem, admin.pem, admin.key; read-only.pem
                   and read-only.key may only read). The certificate's subject OU is the caller's role
  --json           print JSON instead of a table
`;

interface Args {
  positionals: string[];
  json: boolean;
  size?: string;
  labels: string[];
  force: boolean;
  from?: string;
  to?: string;
  qosClass?: string;
  limits: string[];
  reserveIops?: string;
  reserveBw?: string;
  weight?: string;
  iops?: string;
  bandwidth?: string;
  headroom?: string;
  recalibrate: boolean;
  nodes?: string;
  dir?: string;
  diskSize?: string;
  overcommitPercent?: string;
  loopback: boolean;
  replicas?: string;
  replicated: boolean;
  replicaTimeout?: string;
  minInSync?: string;
  reason?: string;
  node?: string;
  tls: boolean;
  readOnly: boolean;
  takeover: boolean;
}

const DEFAULT_CLUSTER_DIR = "/tmp/keelson-cluster";
/** Each node's disk in `keelson up` unless --disk-size says otherwise. */
const DEFAULT_LOCAL_DISK_BYTES = 1024 ** 3;
/** Smaller disks leave a pool too little room past its metadata to be of use. */
const MIN_LOCAL_DISK_BYTES = 64 * 1024 ** 2;
/** The disks are sparse files, but a typo (16P) should not make one. */
const MAX_LOCAL_DISK_BYTES = 16 * 1024 ** 4;
/** Loop devices and the pool work in 4 KiB blocks. */
const LOCAL_DISK_ALIGN_BYTES = 4096;

/** A refused command line (bad flag, value or subcommand): printed as `keelson: INVALID_ARGUMENT: ...`. */
function invalid(message: string): KeelsonError {
  return new KeelsonError({ code: "INVALID_ARGUMENT", message });
}

/** Client credentials from --tls-ca/--tls-cert/--tls-key; none (plaintext) without --tls-ca. */
function clientTls(values: { "tls-ca"?: string; "tls-cert"?: string; "tls-key"?: string }): { credentials?: ChannelCredentials } {
  const { "tls-ca": ca, "tls-cert": cert, "tls-key": key } = values;
  if (!ca) {
    if (cert || key) throw invalid("--tls-cert and --tls-key need --tls-ca");
    return {};
  }
  if (Boolean(cert) !== Boolean(key)) throw invalid("--tls-cert and --tls-key go together");
  const read = (f: string) => fs.readFileSync(f);
  return {
    credentials: cert && key ? credentials.createSsl(read(ca), read(key), read(cert)) : credentials.createSsl(read(ca)),
  };
}

/** --disk-size of `keelson up`: a size (util/size.ts) from 64 MiB to 16 TiB, whole 4 KiB blocks. */
function localDiskSizeBytes(text: string | undefined): number {
  if (text === undefined) return DEFAULT_LOCAL_DISK_BYTES;
  const bytes = parseSizeBytes(text);
  if (bytes < MIN_LOCAL_DISK_BYTES || bytes > MAX_LOCAL_DISK_BYTES || bytes % LOCAL_DISK_ALIGN_BYTES !== 0) {
    throw invalid(
      `invalid --disk-size ${JSON.stringify(text)} (${bytes} bytes): from ${formatBytes(MIN_LOCAL_DISK_BYTES)} to ${formatBytes(MAX_LOCAL_DISK_BYTES)}, a multiple of 4 KiB`,
    );
  }
  return bytes;
}

/** --overcommit-percent of `keelson up`, checked here (decimal digits, the engine's range) so that no node fails to start on it. */
function overcommitArgs(text: string | undefined): string[] {
  if (text === undefined) return [];
  return ["--overcommit-percent", String(validateOvercommitPercent(/^\d+$/.test(text) ? Number(text) : text))];
}

async function upCommand(args: Args): Promise<void> {
  const dir = args.dir ?? process.env.KEELSON_CLUSTER_DIR ?? DEFAULT_CLUSTER_DIR;
  if (fs.existsSync(path.join(dir, "cluster.json")))
    throw new KeelsonError({ code: "ALREADY_EXISTS", message: `a cluster is already up in ${dir}; run keelson down first` });
  const nodes = args.nodes ? number(args.nodes, "--nodes") : 3;
  if (!Number.isInteger(nodes) || nodes < 1 || nodes > 16) throw invalid(`invalid --nodes ${nodes}: 1 to 16`);
  const diskSizeBytes = localDiskSizeBytes(args.diskSize);
  const keelsondArgs = overcommitArgs(args.overcommitPercent);
  const isolation = args.loopback || process.getuid?.() !== 0 ? "loopback" : "netns";
  if (isolation === "loopback")
    process.stderr.write("keelson up: not root (or --loopback): nodes get 127.0.0.x addresses and plain files, no namespaces\n");
  const cluster = await LocalCluster.start({
    nodes,
    dir,
    isolation,
    detached: true,
    tls: args.tls,
    diskSizeBytes,
    keelsondArgs,
    // Each node measures its disk at first start: reservations are admitted against what it does.
    calibrate: true,
  });
  print(
    args,
    cluster.state,
    () =>
      table([
        ["NODE", "ZONE", "CONTROL", "NBD", "NETNS", "DISK", "PID"],
        ...cluster.nodes.map((n) => [
          n.nodeId,
          n.zone,
          n.grpcAddress,
          n.nbdAddress,
          n.netns ?? "-",
          n.loopDevice ?? n.diskFile,
          String(n.pid),
        ]),
      ]) +
      `\netcd ${cluster.etcdEndpoint}; state in ${dir}/cluster.json; keelson --address ${cluster.nodes[0]?.grpcAddress}${
        cluster.state.tls
          ? ` --tls-ca ${cluster.state.tls.pki.caFile} --tls-cert ${cluster.state.tls.admin.certFile} --tls-key ${cluster.state.tls.admin.keyFile}`
          : ""
      } cluster nodes`,
  );
}

async function downCommand(args: Args): Promise<void> {
  const dir = args.dir ?? process.env.KEELSON_CLUSTER_DIR ?? DEFAULT_CLUSTER_DIR;
  if (!fs.existsSync(path.join(dir, "cluster.json"))) throw invalid(`no cluster is up in ${dir}`);
  await LocalCluster.fromDir(dir).stop();
  process.stdout.write(`stopped the local cluster in ${dir}\n`);
}

async function clusterCommand(client: KeelsonClient, args: Args): Promise<void> {
  const nodes = await client.listNodes();
  print(args, nodes, () =>
    table([
      ["NODE", "STATE", "ALIVE", "LEADER", "ZONE", "CONTROL", "STORAGE", "DISK FREE", "PROVISIONED"],
      ...nodes.map((n) => [
        n.nodeId,
        n.state,
        String(n.alive),
        n.leader ? "*" : "",
        n.zone,
        n.controlAddress,
        n.storageAddress,
        n.disk ? `${formatBytes(n.disk.freeBytes)} of ${formatBytes(n.disk.totalBytes)}` : "-",
        n.disk?.overcommitPercent
          ? `${formatBytes(n.disk.provisionedBytes)} of ${formatBytes(n.disk.provisionLimitBytes)} (${n.disk.overcommitPercent}%)`
          : "-",
      ]),
    ]),
  );
}

const LIMIT_FLAGS: Record<string, { key: keyof QosLimits; bytes: boolean }> = {
  "total-iops": { key: "totalIops", bytes: false },
  "read-iops": { key: "readIops", bytes: false },
  "write-iops": { key: "writeIops", bytes: false },
  "read-bw": { key: "readBytesPerSec", bytes: true },
  "write-bw": { key: "writeBytesPerSec", bytes: true },
};

function number(value: string, what: string): number {
  const n = Number(value);
  if (!Number.isFinite(n)) throw invalid(`invalid ${what} ${JSON.stringify(value)}: a number`);
  return n;
}

/** The QoS flags as a policy; undefined when none was given. */
function qosFromArgs(args: Args): QosPolicy | undefined {
  const limits: QosLimits = {};
  for (const l of args.limits) {
    const [key, value = ""] = l.split("=", 2);
    const flag = LIMIT_FLAGS[key ?? ""];
    if (!flag) throw invalid(`invalid --limit ${JSON.stringify(l)}: keys are ${Object.keys(LIMIT_FLAGS).join(", ")}`);
    const [rate = "", burst] = value.split("/", 2);
    const parse = (v: string): number => (flag.bytes ? parseSizeBytes(v) : number(v, `--limit ${key}`));
    limits[flag.key] = burst === undefined ? { rate: parse(rate) } : { rate: parse(rate), burst: parse(burst) };
  }
  const policy: QosPolicy = {
    limits,
    ...(args.reserveIops ? { reservationIops: number(args.reserveIops, "--reserve-iops") } : {}),
    ...(args.reserveBw ? { reservationBytesPerSec: parseSizeBytes(args.reserveBw) } : {}),
    ...(args.weight ? { weight: number(args.weight, "--weight") } : {}),
  };
  const empty = args.limits.length === 0 && !args.reserveIops && !args.reserveBw && !args.weight;
  return empty ? undefined : policy;
}

/** Splits `VOLUME@SNAPSHOT`; the snapshot part is undefined without an '@'. */
function splitRef(ref: string): { volume: string; snapshot: string | undefined } {
  const at = ref.indexOf("@");
  return at < 0 ? { volume: ref, snapshot: undefined } : { volume: ref.slice(0, at), snapshot: ref.slice(at + 1) };
}

function snapshotRef(ref: string | undefined): { volume: string; name: string } {
  const { volume, snapshot } = splitRef(need(ref, "VOLUME@NAME"));
  if (!snapshot) throw invalid(`expected VOLUME@NAME, got ${JSON.stringify(ref)}`);
  return { volume, name: snapshot };
}

function snapshotRows(snaps: Snapshot[]): string[][] {
  const header = ["SNAPSHOT", "SIZE", "ALLOCATED", "CREATED", "PARENT", "EXPORT"];
  return [
    header,
    ...snaps.map((s) => [
      `${s.volume}@${s.name}`,
      formatBytes(s.sizeBytes),
      formatBytes(s.allocatedBytes),
      s.createdAt.toISOString(),
      s.parentSnapshot || "-",
      s.export.nbdTcpUri || s.export.nbdUnixUri,
    ]),
  ];
}

async function snapshotCommand(client: KeelsonClient, args: Args): Promise<void> {
  const [, sub, ref] = args.positionals;
  switch (sub) {
    case "create": {
      const s = await client.createSnapshot({ ...snapshotRef(ref), labels: parseLabels(args.labels) });
      return print(args, s, () => table(snapshotRows([s])));
    }
    case "list": {
      const ss = await client.listSnapshots(ref ? { volume: ref } : {});
      return print(args, ss, () => table(snapshotRows(ss)));
    }
    case "get": {
      const s = await client.getSnapshot(snapshotRef(ref));
      return print(args, s, () => table(snapshotRows([s])));
    }
    case "delete": {
      const r = await client.deleteSnapshot(snapshotRef(ref));
      return print(args, r, () => `deleted ${ref}; ${formatBytes(r.freedBytes)} returned to the pool`);
    }
    default:
      throw invalid(`unknown snapshot command ${JSON.stringify(sub)}\n\n${USAGE}`);
  }
}

function cloneSource(from: string): VolumeSource {
  const { volume, snapshot } = splitRef(from);
  return snapshot ? { snapshot: { volume, name: snapshot } } : { volume };
}

function table(rows: string[][]): string {
  const widths = rows[0]?.map((_, i) => Math.max(...rows.map((r) => (r[i] ?? "").length))) ?? [];
  return rows
    .map((r) =>
      r
        .map((c, i) => c.padEnd(widths[i] ?? 0))
        .join("  ")
        .trimEnd(),
    )
    .join("\n");
}

function volumeRows(volumes: Volume[]): string[][] {
  const header = ["NAME", "SIZE", "ALLOCATED", "STATE", "CONNS", "EXPORT"];
  return [
    header,
    ...volumes.map((v) => [
      v.name,
      formatBytes(v.sizeBytes),
      formatBytes(v.allocatedBytes),
      v.state,
      String(v.connections),
      v.export.nbdTcpUri || v.export.nbdUnixUri,
    ]),
  ];
}

function attachmentText(a: Attachment): string {
  const head = `${a.volume} on ${a.nodeId}${a.readOnly ? " (read-only)" : ""}, epoch ${a.epoch}: ${a.state}; ${a.export.nbdTcpUri || a.export.nbdUnixUri}`;
  const rows = [
    ["REPLICA", "STATE", "REBUILD", "LAST REBUILD", "REASON"],
    ...a.replicas.map((r) => [
      r.nodeId,
      r.state,
      r.state === "rebuilding"
        ? `${formatBytes(r.rebuiltBytes)}/${formatBytes(r.rebuildTotalBytes)}${r.fullRebuild ? " (full)" : ""}`
        : "-",
      r.lastRebuild ? `${formatBytes(r.lastRebuild.bytes)} in ${r.lastRebuild.durationMs} ms` : "-",
      r.reason || "-",
    ]),
  ];
  return `${head}\n${table(rows)}`;
}

function print(args: Args, value: unknown, human: () => string): void {
  process.stdout.write(`${args.json ? JSON.stringify(value, null, 2) : human()}\n`);
}

function need(value: string | undefined, what: string): string {
  if (!value) throw invalid(`missing ${what}\n\n${USAGE}`);
  return value;
}

function parseLabels(labels: string[]): Record<string, string> {
  return Object.fromEntries(
    labels.map((l) => {
      const at = l.indexOf("=");
      if (at <= 0) throw invalid(`invalid label ${JSON.stringify(l)}: use key=value`);
      return [l.slice(0, at), l.slice(at + 1)];
    }),
  );
}

async function volumeCommand(client: KeelsonClient, args: Args): Promise<void> {
  const [, sub, name] = args.positionals;
  switch (sub) {
    case "create": {
      const qos = qosFromArgs(args);
      const v = await client.createVolume({
        name: need(name, "NAME"),
        sizeBytes: parseSizeBytes(need(args.size, "--size")),
        labels: parseLabels(args.labels),
        ...(args.replicas ? { replicas: number(args.replicas, "--replicas") } : {}),
        ...(args.replicated ? { replicated: true } : {}),
        ...(args.minInSync ? { minInSync: number(args.minInSync, "--min-in-sync") } : {}),
        ...(args.qosClass ? { qosClass: args.qosClass } : {}),
        ...(qos ? { qos } : {}),
      });
      return print(args, v, () => table(volumeRows([v])));
    }
    case "attach": {
      const a = await client.attachVolume(
        {
          name: need(name, "NAME"),
          ...(args.replicaTimeout ? { replicaTimeoutMs: number(args.replicaTimeout, "--replica-timeout") } : {}),
          ...(args.node ? { nodeId: args.node } : {}),
          readOnly: args.readOnly,
          takeover: args.takeover,
        },
        // A read-only attach after an unclean detach resyncs first: give it time.
        { timeoutMs: 600_000 },
      );
      return print(args, a, () => attachmentText(a));
    }
    case "detach": {
      await client.detachVolume({ name: need(name, "NAME"), ...(args.node ? { nodeId: args.node } : {}), force: args.force });
      return print(args, { detached: name }, () => `detached ${name}${args.node ? ` from ${args.node}` : ""}`);
    }
    case "attachments": {
      const list = await client.listAttachments({ name: need(name, "NAME") });
      return print(args, list, () =>
        table([
          ["NODE", "MODE", "EPOCH", "SINCE"],
          ...list.map((e) => [
            e.nodeId,
            e.readOnly ? "read-only" : "writable",
            String(e.epoch),
            e.attachedAt?.toISOString() ?? "-",
          ]),
        ]),
      );
    }
    case "attachment": {
      const a = await client.getAttachment({ name: need(name, "NAME") });
      return print(args, a, () => attachmentText(a));
    }
    case "declare-in-sync": {
      const nodeId = need(args.node, "--node");
      const v = await client.declareInSync({ name: need(name, "NAME"), nodeId, reason: need(args.reason, "--reason") });
      return print(
        args,
        v,
        () => `${v.name}: the replica on ${nodeId} is now the only one in sync; the others are rebuilt from it`,
      );
    }
    case "clone": {
      const v = await client.createVolume({
        name: need(name, "NAME"),
        sizeBytes: args.size ? parseSizeBytes(args.size) : 0,
        labels: parseLabels(args.labels),
        source: cloneSource(need(args.from, "--from")),
      });
      return print(args, v, () => table(volumeRows([v])));
    }
    case "qos": {
      const qos = qosFromArgs(args);
      const v = await client.setVolumeQos({
        name: need(name, "NAME"),
        ...(args.qosClass ? { qosClass: args.qosClass } : {}),
        ...(qos ? { qos } : {}),
      });
      return print(args, v, () => `${v.name}: ${JSON.stringify({ qosClass: v.qosClass, ...v.qos })}`);
    }
    case "revert": {
      const v = await client.revertVolume({ name: need(name, "NAME"), snapshot: need(args.to, "--to") });
      return print(args, v, () => table(volumeRows([v])));
    }
    case "list": {
      const vs = await client.listVolumes();
      return print(args, vs, () => table(volumeRows(vs)));
    }
    case "get": {
      const v = await client.getVolume({ name: need(name, "NAME") });
      return print(args, v, () => table(volumeRows([v])));
    }
    case "resize": {
      const v = await client.resizeVolume({ name: need(name, "NAME"), sizeBytes: parseSizeBytes(need(args.size, "--size")) });
      return print(args, v, () => table(volumeRows([v])));
    }
    case "delete": {
      const r = await client.deleteVolume({ name: need(name, "NAME"), force: args.force });
      return print(args, r, () => `deleted ${name}; ${formatBytes(r.freedBytes)} returned to the pool`);
    }
    default:
      throw invalid(`unknown volume command ${JSON.stringify(sub)}\n\n${USAGE}`);
  }
}

async function nodeCommand(client: KeelsonClient, args: Args): Promise<void> {
  const sub = args.positionals[1];
  if (sub === "capability") {
    const n = await client.setDiskCapability({
      recalibrate: args.recalibrate,
      ...(args.iops ? { iops: number(args.iops, "--iops") } : {}),
      ...(args.bandwidth ? { bytesPerSec: parseSizeBytes(args.bandwidth) } : {}),
      ...(args.headroom ? { headroom: number(args.headroom, "--headroom") } : {}),
    });
    return print(args, n.pool.capability, () => JSON.stringify(n.pool.capability));
  }
  if (sub !== undefined && sub !== "info") throw invalid(`unknown node command ${JSON.stringify(sub)}\n\n${USAGE}`);
  const n = await client.getNode();
  print(args, n, () =>
    table([
      ["NODE", "POOL", "TOTAL", "ALLOCATED", "FREE", "VOLUMES", "PROVISIONED", "CAPABILITY", "RESERVED", "NBD", "I/O"],
      [
        n.nodeId,
        n.pool.path,
        formatBytes(n.pool.totalBytes),
        formatBytes(n.pool.allocatedBytes),
        formatBytes(n.pool.freeBytes),
        String(n.pool.volumeCount),
        `${formatBytes(n.pool.provisionedBytes)} of ${formatBytes(n.pool.provisionLimitBytes)} (${n.pool.overcommitPercent}%)`,
        n.pool.capability ? `${n.pool.capability.iops} IOPS ${formatBytes(n.pool.capability.bytesPerSec)}/s` : "-",
        `${n.pool.reservedIops} IOPS`,
        n.nbdTcpAddress || n.nbdUnixSocket,
        `${n.ioEngineNote ? `${n.ioEngine} (${n.ioEngineNote})` : n.ioEngine}${n.pool.directIo ? ", O_DIRECT" : ""}`,
      ],
    ]),
  );
}

async function main(): Promise<number> {
  const { values, positionals } = parseArgs({
    allowPositionals: true,
    options: {
      address: { type: "string" },
      json: { type: "boolean" },
      size: { type: "string" },
      label: { type: "string", multiple: true },
      force: { type: "boolean" },
      from: { type: "string" },
      to: { type: "string" },
      "qos-class": { type: "string" },
      limit: { type: "string", multiple: true },
      "reserve-iops": { type: "string" },
      "reserve-bw": { type: "string" },
      weight: { type: "string" },
      iops: { type: "string" },
      bandwidth: { type: "string" },
      headroom: { type: "string" },
      recalibrate: { type: "boolean" },
      nodes: { type: "string" },
      dir: { type: "string" },
      "disk-size": { type: "string" },
      "overcommit-percent": { type: "string" },
      loopback: { type: "boolean" },
      replicas: { type: "string" },
      replicated: { type: "boolean" },
      "replica-timeout": { type: "string" },
      "min-in-sync": { type: "string" },
      reason: { type: "string" },
      node: { type: "string" },
      tls: { type: "boolean" },
      "tls-ca": { type: "string" },
      "tls-cert": { type: "string" },
      "tls-key": { type: "string" },
      "read-only": { type: "boolean" },
      takeover: { type: "boolean" },
      help: { type: "boolean", short: "h" },
    },
  });
  if (values.help || positionals.length === 0) {
    process.stdout.write(USAGE);
    return values.help ? 0 : 2;
  }
  const args: Args = {
    positionals,
    json: values.json ?? false,
    size: values.size,
    labels: values.label ?? [],
    force: values.force ?? false,
    from: values.from,
    to: values.to,
    qosClass: values["qos-class"],
    limits: values.limit ?? [],
    reserveIops: values["reserve-iops"],
    reserveBw: values["reserve-bw"],
    weight: values.weight,
    iops: values.iops,
    bandwidth: values.bandwidth,
    headroom: values.headroom,
    recalibrate: values.recalibrate ?? false,
    nodes: values.nodes,
    dir: values.dir,
    diskSize: values["disk-size"],
    overcommitPercent: values["overcommit-percent"],
    loopback: values.loopback ?? false,
    replicas: values.replicas,
    replicated: values.replicated ?? false,
    replicaTimeout: values["replica-timeout"],
    minInSync: values["min-in-sync"],
    reason: values.reason,
    node: values.node,
    tls: values.tls ?? false,
    readOnly: values["read-only"] ?? false,
    takeover: values.takeover ?? false,
  };
  if (positionals[0] === "up") {
    await upCommand(args);
    return 0;
  }
  if (positionals[0] === "down") {
    await downCommand(args);
    return 0;
  }
  const address = values.address ?? process.env.KEELSON_ADDRESS ?? DEFAULT_GRPC_ADDRESS;
  const client = createClient({ address, defaultTimeoutMs: 15_000, ...clientTls(values) });
  try {
    if (positionals[0] === "volume") await volumeCommand(client, args);
    else if (positionals[0] === "snapshot") await snapshotCommand(client, args);
    else if (positionals[0] === "cluster") await clusterCommand(client, args);
    else if (positionals[0] === "node") await nodeCommand(client, args);
    else throw invalid(`unknown command ${JSON.stringify(positionals[0])}\n\n${USAGE}`);
    return 0;
  } finally {
    client.close();
  }
}

main().then(
  (code) => process.exit(code),
  (error: unknown) => {
    if (isKeelsonError(error)) process.stderr.write(`keelson: ${error.code}: ${error.message}\n`);
    else process.stderr.write(`keelson: ${messageOf(error)}\n`);
    process.exit(1);
  },
);
