import { execFile } from "node:child_process";
import { randomBytes } from "node:crypto";
import { promisify } from "node:util";
import { KeelsonError } from "@keelson/sdk";

const exec = promisify(execFile);

/** Runs a command; INTERNAL with its stderr when it fails. */
export async function sh(cmd: string, args: string[]): Promise<string> {
  try {
    const { stdout } = await exec(cmd, args, { timeout: 30_000 });
    return stdout;
  } catch (error) {
    const e = error as { stderr?: string; message: string };
    throw new KeelsonError({
      code: "INTERNAL",
      message: `${cmd} ${args.join(" ")} failed: ${e.stderr?.trim() || e.message}`,
      cause: error,
    });
  }
}

/** The hosts of one local cluster's private network: a bridge, and one namespace per node. */
export interface HostNetwork {
  /** Short id that names everything this cluster creates. */
  id: string;
  bridge: string;
  /** `10.x.y` of the /24 used. */
  subnet: string;
  /** Address of the bridge in the root namespace (etcd listens here). */
  hostAddress: string;
}

/** Names of one node's namespace and its veth pair. */
export function nodeNetNames(
  net: HostNetwork,
  index: number,
): { netns: string; hostVeth: string; nodeVeth: string; address: string } {
  return {
    netns: `kn-${net.id}-${index}`,
    hostVeth: `kv${net.id}${index}a`,
    nodeVeth: `kv${net.id}${index}b`,
    address: `${net.subnet}.${11 + index}`,
  };
}

/** Picks a /24 in 10.200-249.x.0 that no route on this host uses. */
async function freeSubnet(): Promise<string> {
  const routes = await sh("ip", ["-4", "route", "show", "table", "all"]);
  for (let attempt = 0; attempt < 64; attempt++) {
    const b = randomBytes(2);
    const subnet = `10.${200 + ((b[0] as number) % 50)}.${b[1] as number}`;
    if (!routes.includes(`${subnet}.`)) return subnet;
  }
  throw new KeelsonError({ code: "UNAVAILABLE", message: "no free 10.200-249.x.0/24 subnet for a local cluster" });
}

/** A random locally administered unicast MAC address (first octet 0x02). */
function bridgeAddress(): string {
  return ["02", ...Array.from(randomBytes(5), (b) => b.toString(16).padStart(2, "0"))].join(":");
}

/** Creates the bridge of a new cluster network (root only). */
export async function createNetwork(): Promise<HostNetwork> {
  const id = randomBytes(2).toString("hex");
  const subnet = await freeSubnet();
  const net: HostNetwork = { id, bridge: `kb-${id}`, subnet, hostAddress: `${subnet}.1` };
  // An address of its own: a bridge without one takes the lowest of its ports', so a node joining
  // later changed the gateway the running nodes had resolved, and their connections to etcd stalled
  // (frames lost until ARP renewed, TCP backing off) long enough for a liveness lease to lapse.
  await sh("ip", ["link", "add", net.bridge, "address", bridgeAddress(), "type", "bridge"]);
  await sh("ip", ["addr", "add", `${net.hostAddress}/24`, "dev", net.bridge]);
  await sh("ip", ["link", "set", net.bridge, "up"]);
  return net;
}

/** Gives node `index` its own namespace, wired to the bridge with its own address. */
export async function addNodeNamespace(net: HostNetwork, index: number): Promise<string> {
  const n = nodeNetNames(net, index);
  await sh("ip", ["netns", "add", n.netns]);
  await sh("ip", ["link", "add", n.hostVeth, "type", "veth", "peer", "name", n.nodeVeth]);
  await sh("ip", ["link", "set", n.nodeVeth, "netns", n.netns]);
  await sh("ip", ["link", "set", n.hostVeth, "master", net.bridge]);
  await sh("ip", ["link", "set", n.hostVeth, "up"]);
  await sh("ip", ["-n", n.netns, "link", "set", "lo", "up"]);
  await sh("ip", ["-n", n.netns, "link", "set", n.nodeVeth, "name", "eth0"]);
  await sh("ip", ["-n", n.netns, "addr", "add", `${n.address}/24`, "dev", "eth0"]);
  await sh("ip", ["-n", n.netns, "link", "set", "eth0", "up"]);
  return n.address;
}

/** Cuts node `index` off the network (or heals it): its link goes down, the process keeps running. */
export async function setNodeLink(net: HostNetwork, index: number, up: boolean): Promise<void> {
  await sh("ip", ["-n", nodeNetNames(net, index).netns, "link", "set", "eth0", up ? "up" : "down"]);
}

/**
 * Aborts every TCP connection left in node `index`'s namespace. A killed process's sockets
 * outlive it in the kernel: one with data still queued keeps retransmitting, and delivers
 * that data once its route returns. A machine that lost power sends nothing more.
 */
export async function abortNodeConnections(net: HostNetwork, index: number): Promise<void> {
  await sh("ip", ["netns", "exec", nodeNetNames(net, index).netns, "ss", "-K", "-t", "-a"]);
}

/** The TCP connections in node `index`'s namespace that can still carry data (not TIME-WAIT), one per line. */
export async function nodeConnections(net: HostNetwork, index: number): Promise<string[]> {
  const out = await sh("ip", ["netns", "exec", nodeNetNames(net, index).netns, "ss", "-H", "-t", "-n", "exclude", "time-wait"]);
  return out.split("\n").filter((l) => l.trim() !== "");
}

/** Removes what {@link createNetwork} and {@link addNodeNamespace} made; missing pieces are skipped. */
export async function removeNetwork(net: HostNetwork, nodes: number): Promise<string[]> {
  const problems: string[] = [];
  for (let i = 0; i < nodes; i++) {
    await sh("ip", ["netns", "del", nodeNetNames(net, i).netns]).catch((e: Error) => problems.push(e.message));
  }
  await sh("ip", ["link", "del", net.bridge]).catch((e: Error) => problems.push(e.message));
  return problems.filter((p) => !/Cannot find|No such|does not exist|Cannot remove/.test(p));
}
