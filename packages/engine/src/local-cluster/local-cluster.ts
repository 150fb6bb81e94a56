import fs from "node:fs";
import path from "node:path";
import { fileURLToPath } from "node:url";
import { type ChannelCredentials, credentials } from "@grpc/grpc-js";
import { createClient, isKeelsonError, type KeelsonClient, KeelsonError } from "@keelson/sdk";
import { messageOf } from "../util/errors.js";
import {
  abortNodeConnections,
  addNodeNamespace,
  createNetwork,
  type HostNetwork,
  nodeConnections,
  nodeNetNames,
  removeNetwork,
  setNodeLink,
  sh,
} from "./host-network.js";
import { type CertFiles, createLocalPki, issueCert, type LocalPki } from "./local-pki.js";
import { freePort, startProcess, stopProcess, waitForFile, waitForPort } from "./local-process.js";
import { type LocalClusterState, type LocalClusterTls, type LocalNodeState, readStateFile, stateFile } from "./state.js";

/** What a client of a TLS local cluster presents: the admin certificate, and the cluster CA to check the nodes. */
export function adminCredentials(tls: { pki: LocalPki; admin: CertFiles }): ChannelCredentials {
  return certCredentials(tls.pki, tls.admin);
}

/** Client credentials of a TLS local cluster with certificate `cert` (one of its roles' or a node's). */
export function certCredentials(pki: LocalPki, cert: CertFiles): ChannelCredentials {
  return credentials.createSsl(fs.readFileSync(pki.caFile), fs.readFileSync(cert.keyFile), fs.readFileSync(cert.certFile));
}

/** A local cluster's PKI: its CA, a client certificate per control-API role, etcd's for the host address. */
function createClusterTls(dir: string, hostAddress: string): LocalClusterTls {
  const pki = createLocalPki(path.join(dir, "tls"));
  return {
    pki,
    admin: issueCert(pki, { name: "admin", role: "admin", ips: [] }),
    readOnly: issueCert(pki, { name: "read-only", role: "read-only", ips: [] }),
    etcd: issueCert(pki, { name: "etcd", role: "etcd", ips: [...new Set([hostAddress, "127.0.0.1"])] }),
  };
}

/** etcd's flags for TLS: the server's certificate, and clients (engines, etcdctl) and peers must present one the CA signed. */
function etcdTlsArgs(tls: LocalClusterTls): string[] {
  const { caFile } = tls.pki;
  const { certFile, keyFile } = tls.etcd;
  return [
    ...["--cert-file", certFile, "--key-file", keyFile, "--client-cert-auth", "--trusted-ca-file", caFile],
    ...["--peer-cert-file", certFile, "--peer-key-file", keyFile, "--peer-client-cert-auth", "--peer-trusted-ca-file", caFile],
  ];
}

/** The built daemon; from the sources (tests run them directly) that is the package's dist/. */
const KEELSOND = fileURLToPath(
  new URL(import.meta.url.endsWith(".ts") ? "../../dist/cli/keelsond.js" : "../cli/keelsond.js", import.meta.url),
);
const NODE_START_TIMEOUT_MS = 60_000;
/** How long a new cluster may take until every node is seen alive. */
const FORM_TIMEOUT_MS = 20_000;
const STOP_GRACE_MS = 10_000;
const GRPC_PORT = 7420;
const NBD_PORT = 10809;

/** Disk capability of local cluster nodes unless they calibrate (IOPS:bandwidth). */
export const LOCAL_DISK_CAPABILITY = "100000:2G";

/** Options of {@link LocalCluster.start}. */
export interface LocalClusterOptions {
  /** How many nodes (keelsond processes) to start; node i is `node${i + 1}`. */
  nodes: number;
  /** Where pools, logs, etcd data and the state file go (created). */
  dir: string;
  /** "netns": a namespace, address and loop-device disk per node (root); "loopback": 127.0.0.x and plain files. Default: netns when root. */
  isolation?: "netns" | "loopback";
  /** Size of each node's disk (sparse). Default 1 GiB. */
  diskSizeBytes?: number;
  /**
   * Directory of node i's disk file at index i (default `dir`): a small
   * filesystem of its own, say, to see what a full host filesystem does. The
   * cluster removes the files it made there.
   */
  diskDirs?: ReadonlyArray<string | undefined>;
  /**
   * With netns isolation, "loop" (default) gives each node a loop device over
   * its disk file, a block device as on a real node; "file" gives it the file
   * itself as a file-backed pool (as loopback isolation always does). A loop
   * device reports a full host filesystem as EIO at fsync, a file as ENOSPC
   * at the write.
   */
  diskKind?: "loop" | "file";
  /**
   * Existing files or block devices to use as disks instead of fresh sparse
   * files, by node index (a gap gets a fresh one): a test puts a node's pool
   * on a simulated disk this way (a slow one, or one that loses power). A
   * file gets a loop device (netns); a block device is the pool itself.
   * Neither is removed by `stop()`.
   */
  diskFiles?: ReadonlyArray<string | undefined>;
  /** Zones to spread the nodes over (node i is in zone i mod zones). Default: one per node. */
  zones?: number;
  /** Seconds of each node's liveness lease. */
  leaseTtlS?: number;
  /** Children outlive this process (`keelson up`); stop them later from the state file. */
  detached?: boolean;
  /** Extra keelsond flags for every node. */
  keelsondArgs?: string[];
  /**
   * Measure each node's disk at its first start (O_DIRECT, with syncs: the
   * disk under the node's file, not the page cache over it), so reservations
   * are admitted against what the disk does; the conformance suite's local
   * target and `keelson cluster up` do. Default false, for tests that start
   * many clusters: the nodes get a fixed capability (LOCAL_DISK_CAPABILITY)
   * and start a second sooner each.
   */
  calibrate?: boolean;
  /**
   * etcd's data directory. Default: under /dev/shm where it exists, else in
   * `dir`. etcd renews leases only as fast as it syncs its log, so on the
   * disk the node pools load, leases lapse under heavy I/O (production etcd
   * gets a disk of its own for the same reason).
   */
  etcdDataDir?: string;
  /**
   * Run the control APIs on mutual TLS: a CA made for the cluster (in
   * `DIR/tls`, with openssl), a certificate per node for its addresses, and
   * an `admin` client certificate that `client(i)` and the CLI use.
   */
  tls?: boolean;
}

/** etcd's data directory for a cluster in `dir`: on tmpfs when there is one (see {@link LocalClusterOptions.etcdDataDir}). */
function defaultEtcdDataDir(dir: string): string {
  if (!fs.existsSync("/dev/shm")) return path.join(dir, "etcd");
  return path.join("/dev/shm", `keelson-etcd-${path.basename(dir)}-${process.pid}-${Date.now().toString(36)}`);
}

function isBlockDevice(file: string): boolean {
  return fs.statSync(file).isBlockDevice();
}

/** Brings up a local cluster: etcd and one keelsond per node, each with its own address and disk. */
export const LocalCluster = {
  async start(options: LocalClusterOptions): Promise<StartedLocalCluster> {
    const isolation = options.isolation ?? (process.getuid?.() === 0 ? "netns" : "loopback");
    fs.mkdirSync(options.dir, { recursive: true });
    const network = isolation === "netns" ? await createNetwork() : null;
    const state: LocalClusterState = {
      isolation,
      dir: options.dir,
      network,
      etcd: {
        pid: 0,
        endpoint: "",
        peerPort: 0,
        dataDir: options.etcdDataDir ?? defaultEtcdDataDir(options.dir),
        logFile: path.join(options.dir, "etcd.log"),
      },
      nodes: [],
      leaseTtlS: options.leaseTtlS ?? 3,
      detached: options.detached ?? false,
      keelsondArgs: [...(options.calibrate ? [] : ["--disk-capability", LOCAL_DISK_CAPABILITY]), ...(options.keelsondArgs ?? [])],
      tls: null,
    };
    if (options.tls) state.tls = createClusterTls(options.dir, network?.hostAddress ?? "127.0.0.1");
    const cluster = new StartedLocalCluster(state);
    try {
      await cluster.startEtcd();
      for (let i = 0; i < options.nodes; i++) await cluster.addNode(i, options);
      await cluster.waitUntilAllAlive(FORM_TIMEOUT_MS);
      return cluster;
    } catch (error) {
      // The logs go with the directory: keep their tails in the error so a failed start explains itself.
      const tails = cluster.logTails(20);
      await cluster.stop().catch(() => undefined);
      throw new KeelsonError({
        code: isKeelsonError(error) ? error.code : "INTERNAL",
        message: `local cluster did not start: ${messageOf(error)}\n${tails}`,
        cause: error,
      });
    }
  },

  /** Reattaches to a cluster a `keelson up` left running; INVALID_ARGUMENT when `DIR/cluster.json` is not a state file. */
  fromDir(dir: string): StartedLocalCluster {
    return new StartedLocalCluster(readStateFile(dir));
  },
};

/** A running local cluster; `stop()` (or `await using`) removes every process, namespace, loop device and file it made. */
export class StartedLocalCluster implements AsyncDisposable {
  readonly state: LocalClusterState;
  readonly #clients: KeelsonClient[] = [];

  constructor(state: LocalClusterState) {
    this.state = state;
  }

  get nodes(): readonly LocalNodeState[] {
    return this.state.nodes;
  }

  get etcdEndpoint(): string {
    return this.state.etcd.endpoint;
  }

  #save(): void {
    fs.writeFileSync(`${stateFile(this.state.dir)}.tmp`, JSON.stringify(this.state, null, 2));
    fs.renameSync(`${stateFile(this.state.dir)}.tmp`, stateFile(this.state.dir));
  }

  /** @internal Starts etcd on the host side of the cluster network. */
  async startEtcd(): Promise<void> {
    const host = this.state.network?.hostAddress ?? "127.0.0.1";
    const e = this.state.etcd;
    // A restart keeps the endpoint the nodes were given.
    const known = e.endpoint ? Number(e.endpoint.slice(e.endpoint.lastIndexOf(":") + 1)) : 0;
    const clientPort = known || (this.state.network ? 2379 : await freePort(host));
    const peerPort = this.state.network ? 2380 : clientPort === known ? e.peerPort : await freePort(host);
    const scheme = this.state.tls ? "https" : "http";
    e.endpoint = `${scheme}://${host}:${clientPort}`;
    e.peerPort = peerPort;
    const peerUrl = `${scheme}://${host}:${peerPort}`;
    const args = ["--name", "keelson", "--data-dir", e.dataDir, "--listen-client-urls", e.endpoint];
    args.push("--advertise-client-urls", e.endpoint, "--listen-peer-urls", peerUrl);
    args.push("--initial-advertise-peer-urls", peerUrl, "--initial-cluster", `keelson=${peerUrl}`);
    if (this.state.tls) args.push(...etcdTlsArgs(this.state.tls));
    e.pid = startProcess("etcd", args, e.logFile, this.state.detached);
    this.#save();
    await waitForPort(host, clientPort, 20_000);
  }

  /** @internal Creates node `index`'s address and disk and starts its keelsond. */
  async addNode(index: number, options: LocalClusterOptions): Promise<void> {
    const net = this.state.network;
    const address = net ? await addNodeNamespace(net, index) : `127.0.0.${11 + index}`;
    let diskFile = options.diskFiles?.[index];
    const ownsDisk = diskFile === undefined;
    if (diskFile === undefined) {
      diskFile = path.join(options.diskDirs?.[index] ?? this.state.dir, `node${index + 1}.img`);
      const fd = fs.openSync(diskFile, "w");
      fs.ftruncateSync(fd, options.diskSizeBytes ?? 1024 ** 3);
      fs.closeSync(fd);
    }
    const loop = net !== null && (options.diskKind ?? "loop") === "loop" && !isBlockDevice(diskFile);
    const loopDevice = loop ? await attachLoop(diskFile) : null;
    const zones = options.zones ?? options.nodes;
    const node: LocalNodeState = {
      index,
      nodeId: `node${index + 1}`,
      zone: `zone-${(index % zones) + 1}`,
      address,
      grpcAddress: `${address}:${GRPC_PORT}`,
      nbdAddress: `${address}:${NBD_PORT}`,
      nbdSocket: path.join(this.state.dir, `node${index + 1}.nbd.sock`),
      netns: net ? nodeNetNames(net, index).netns : null,
      diskFile,
      ownsDisk,
      loopDevice,
      pid: 0,
      logFile: path.join(this.state.dir, `node${index + 1}.log`),
    };
    this.state.nodes[index] = node;
    if (this.state.tls) issueCert(this.state.tls.pki, { name: node.nodeId, role: "node", ips: [address, "127.0.0.1"] });
    await this.startNode(index);
  }

  /** (Re)starts node `index`'s keelsond on its disk; resolves once it serves. */
  async startNode(index: number): Promise<void> {
    const node = this.state.nodes[index] as LocalNodeState;
    const ready = path.join(this.state.dir, `node${index + 1}.ready`);
    fs.rmSync(ready, { force: true });
    const args = [KEELSOND, "--pool", node.loopDevice ?? node.diskFile, "--node-id", node.nodeId, "--zone", node.zone];
    args.push("--grpc-listen", node.grpcAddress, "--nbd-listen", node.nbdAddress, "--nbd-socket", node.nbdSocket);
    args.push("--etcd", this.state.etcd.endpoint);
    args.push("--lease-ttl", String(this.state.leaseTtlS), "--ready-file", ready, ...this.state.keelsondArgs);
    args.push(...this.#nodeTlsArgs(node));
    const [cmd, cmdArgs] = node.netns
      ? ["ip", ["netns", "exec", node.netns, process.execPath, ...args]]
      : [process.execPath, args];
    node.pid = startProcess(cmd, cmdArgs as string[], node.logFile, this.state.detached);
    this.#save();
    try {
      await waitForFile(ready, node.pid, node.logFile, NODE_START_TIMEOUT_MS);
    } catch (error) {
      // A node that did not come up in time must not linger holding its disk: a second start
      // would then fail on the device (EBUSY) instead of starting afresh.
      await stopProcess(node.pid, "keelsond", 0).catch(() => undefined);
      throw error;
    }
  }

  /**
   * Node `node`'s keelsond flags for TLS: its certificate (OU=node, CN=its id) for its control API and,
   * as a client, for its peers and etcd. A cluster without TLS on namespace addresses (not loopback)
   * must say `--insecure`: keelsond refuses such an address otherwise.
   */
  #nodeTlsArgs(node: LocalNodeState): string[] {
    // Namespace addresses are the non-loopback ones; loopback isolation's 127.0.0.x need no flag.
    if (!this.state.tls) return this.state.network ? ["--insecure"] : [];
    const { pki } = this.state.tls;
    const cert = `${path.join(pki.dir, node.nodeId)}.pem`;
    const key = `${path.join(pki.dir, node.nodeId)}.key`;
    return [
      ...["--tls-cert", cert, "--tls-key", key, "--tls-client-ca", pki.caFile],
      ...["--etcd-ca", pki.caFile, "--etcd-cert", cert, "--etcd-key", key],
    ];
  }

  /**
   * Moves stopped node `index` to another disk, a file or a block device as
   * in {@link LocalClusterOptions.diskFiles} (a loop device of its own is
   * detached): after a simulated disk lost power, it comes back as a new
   * device holding what survived. Start the node again with `startNode`.
   */
  async replaceDisk(index: number, diskFile: string): Promise<void> {
    const node = this.state.nodes[index] as LocalNodeState;
    if (node.loopDevice) await sh("losetup", ["-d", node.loopDevice]);
    node.loopDevice = this.state.network && !isBlockDevice(diskFile) ? await attachLoop(diskFile) : null;
    node.diskFile = diskFile;
    node.ownsDisk = false;
    this.#save();
  }

  /**
   * Resolves once every node is seen alive through node 1's control API (its
   * lease is in etcd and the view reaches it); DEADLINE_EXCEEDED naming the nodes that are not.
   */
  async waitUntilAllAlive(timeoutMs: number): Promise<void> {
    if (this.nodes.length === 0) return;
    const client = this.client(0);
    const deadline = Date.now() + timeoutMs;
    let missing: string[] = this.nodes.map((n) => n.nodeId);
    let lastError = "";
    while (Date.now() < deadline) {
      try {
        const seen = await client.listNodes({ timeoutMs: 2_000 });
        missing = this.nodes.map((n) => n.nodeId).filter((id) => !seen.some((s) => s.nodeId === id && s.alive));
        if (missing.length === 0) return;
      } catch (error) {
        lastError = `; last error: ${messageOf(error)}`;
      }
      await new Promise((r) => setTimeout(r, 100));
    }
    throw new KeelsonError({
      code: "DEADLINE_EXCEEDED",
      message: `local cluster: ${missing.join(", ")} not alive after ${timeoutMs} ms${lastError}`,
    });
  }

  /** The last `lines` lines of etcd's and every node's log, for a failed test's report. */
  logTails(lines = 40): string {
    const files = [this.state.etcd.logFile, ...this.nodes.map((n) => n.logFile)];
    return files
      .map((f) => {
        let text = "";
        try {
          text = fs.readFileSync(f, "utf8");
        } catch {
          return `== ${path.basename(f)}: (missing)`;
        }
        return `== ${path.basename(f)}\n${text.trimEnd().split("\n").slice(-lines).join("\n")}`;
      })
      .join("\n");
  }

  /** Kills etcd (-9) and starts it again on the same data and endpoint, as an etcd restart would. */
  async restartEtcd(): Promise<void> {
    await stopProcess(this.state.etcd.pid, "etcd", 0);
    await this.startEtcd();
  }

  /** A control-API client of node `index` (closed with the cluster). */
  client(index: number): KeelsonClient {
    const c = createClient({
      address: (this.state.nodes[index] as LocalNodeState).grpcAddress,
      defaultTimeoutMs: 5_000,
      ...(this.state.tls ? { credentials: adminCredentials(this.state.tls) } : {}),
    });
    this.#clients.push(c);
    return c;
  }

  /** SIGKILL node `index`'s keelsond, as a crash would; resolves once it is gone. */
  async kill9(index: number): Promise<void> {
    await stopProcess((this.state.nodes[index] as LocalNodeState).pid, "keelsond", 0);
  }

  /**
   * Node `index` lost whole, as a power cut: keelsond gets SIGKILL and its kernel's connections
   * are aborted, so nothing it had queued reaches a peer later (after {@link kill9} alone, it
   * can). Netns only: on loopback a node has no kernel of its own (INVALID_ARGUMENT).
   */
  async powerOff(index: number): Promise<void> {
    const net = this.#netnsNetwork();
    await this.kill9(index);
    await abortNodeConnections(net, index);
  }

  /** The TCP connections still open in node `index`'s namespace (netns only), as `ss` lists them. */
  async connectionsOf(index: number): Promise<string[]> {
    return await nodeConnections(this.#netnsNetwork(), index);
  }

  /** Stops node `index` cleanly (SIGTERM). */
  async stopNode(index: number): Promise<void> {
    await stopProcess((this.state.nodes[index] as LocalNodeState).pid, "keelsond", STOP_GRACE_MS);
  }

  /** Takes node `index`'s link down (netns only): it keeps running but reaches no one. INVALID_ARGUMENT on loopback. */
  async partition(index: number): Promise<void> {
    await setNodeLink(this.#netnsNetwork(), index, false);
  }

  /** Brings node `index`'s link back up (netns only); idempotent. INVALID_ARGUMENT on loopback. */
  async heal(index: number): Promise<void> {
    await setNodeLink(this.#netnsNetwork(), index, true);
  }

  #netnsNetwork(): HostNetwork {
    if (!this.state.network) {
      throw new KeelsonError({ code: "INVALID_ARGUMENT", message: "partitions need netns isolation (root)" });
    }
    return this.state.network;
  }

  /** Stops every process and removes namespaces, the bridge, loop devices and the directory. Idempotent. */
  async stop(): Promise<void> {
    for (const c of this.#clients.splice(0)) c.close();
    for (const n of this.state.nodes) if (n?.pid) await stopProcess(n.pid, "keelsond", STOP_GRACE_MS);
    if (this.state.etcd.pid) await stopProcess(this.state.etcd.pid, "etcd", STOP_GRACE_MS);
    const problems: string[] = [];
    for (const n of this.state.nodes) {
      if (!n) continue;
      // Forgotten once detached, so a second stop (a test's cleanup, then its tracker) does not fail on it.
      if (n.loopDevice) {
        await sh("losetup", ["-d", n.loopDevice]).then(
          () => {
            n.loopDevice = null;
          },
          (e: Error) => problems.push(e.message),
        );
      }
      // A disk file this cluster made goes with it (also outside its directory: diskDirs), and a file pool's lock.
      if (n.ownsDisk) for (const f of [n.diskFile, `${n.diskFile}.lock`]) fs.rmSync(f, { force: true });
    }
    if (this.state.network) problems.push(...(await removeNetwork(this.state.network, this.state.nodes.length)));
    fs.rmSync(this.state.etcd.dataDir, { recursive: true, force: true });
    fs.rmSync(this.state.dir, { recursive: true, force: true });
    if (problems.length > 0) {
      throw new KeelsonError({ code: "INTERNAL", message: `local cluster teardown left: ${problems.join("; ")}` });
    }
  }

  async [Symbol.asyncDispose](): Promise<void> {
    await this.stop();
  }
}

/**
 * A loop device over `file` that reads and writes the file with direct I/O, as
 * a disk would: without it every write sat in two page caches (the device's
 * and the file's), and the loop driver wrote the file back through a single
 * worker, far slower than the disk under it.
 */
async function attachLoop(file: string): Promise<string> {
  return (await sh("losetup", ["--find", "--show", "--direct-io=on", file])).trim();
}
