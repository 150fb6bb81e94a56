import fs from "node:fs";
import os from "node:os";
import path from "node:path";
import { isKeelsonError } from "@keelson/sdk";
import { describe, expect, it } from "vitest";
import { type LocalClusterState, parseState, readStateFile, stateFile } from "./state.js";

const FILE = "/tmp/c/cluster.json";

/** A netns cluster on TLS with two nodes, as `keelson up --tls` records it. */
function netnsState(): LocalClusterState {
  const node = (i: number) => ({
    index: i,
    nodeId: `node${i + 1}`,
    zone: `zone-${i + 1}`,
    address: `10.201.7.${11 + i}`,
    grpcAddress: `10.201.7.${11 + i}:7420`,
    nbdAddress: `10.201.7.${11 + i}:10809`,
    nbdSocket: `/tmp/c/node${i + 1}.nbd.sock`,
    netns: `kn-ab12-${i}`,
    diskFile: `/tmp/c/node${i + 1}.img`,
    ownsDisk: true,
    loopDevice: `/dev/loop${i}`,
    pid: 1000 + i,
    logFile: `/tmp/c/node${i + 1}.log`,
  });
  return {
    isolation: "netns",
    dir: "/tmp/c",
    network: { id: "ab12", bridge: "kb-ab12", subnet: "10.201.7", hostAddress: "10.201.7.1" },
    etcd: { pid: 999, endpoint: "http://10.201.7.1:2379", peerPort: 2380, dataDir: "/dev/shm/e", logFile: "/tmp/c/etcd.log" },
    nodes: [node(0), node(1)],
    leaseTtlS: 3,
    detached: true,
    keelsondArgs: ["--disk-capability", "100000:2G"],
    tls: {
      pki: { dir: "/tmp/c/tls", caFile: "/tmp/c/tls/ca.pem", caKeyFile: "/tmp/c/tls/ca.key" },
      admin: { certFile: "/tmp/c/tls/admin.pem", keyFile: "/tmp/c/tls/admin.key" },
      readOnly: { certFile: "/tmp/c/tls/read-only.pem", keyFile: "/tmp/c/tls/read-only.key" },
      etcd: { certFile: "/tmp/c/tls/etcd.pem", keyFile: "/tmp/c/tls/etcd.key" },
    },
  };
}

/** The INVALID_ARGUMENT message `text` is refused with. */
function refusal(text: string): string {
  try {
    parseState(text, FILE);
  } catch (error) {
    expect(isKeelsonError(error) && error.code).toBe("INVALID_ARGUMENT");
    return (error as Error).message;
  }
  throw new Error("accepted");
}

describe("local cluster state file", () => {
  it("reads back what was written: netns with TLS, and loopback without network or TLS, unknown fields kept", () => {
    const netns = netnsState();
    expect(parseState(JSON.stringify(netns, null, 2), FILE)).toEqual(netns);
    const loopback = {
      ...netnsState(),
      isolation: "loopback",
      network: null,
      tls: null,
      nodes: netnsState().nodes.map((n) => ({ ...n, netns: null, loopDevice: null })),
      addedLater: 1,
    };
    expect(parseState(JSON.stringify(loopback), FILE)).toEqual(loopback);
  });

  it("readStateFile reads DIR/cluster.json", () => {
    const dir = fs.mkdtempSync(path.join(os.tmpdir(), "keelson-state-"));
    try {
      fs.writeFileSync(stateFile(dir), JSON.stringify(netnsState()));
      expect(readStateFile(dir)).toEqual(netnsState());
    } finally {
      fs.rmSync(dir, { recursive: true, force: true });
    }
  });

  it("refuses a file that is not a state, naming the file and the first bad field", () => {
    expect(refusal("{")).toMatch(/^\/tmp\/c\/cluster.json is not a local cluster's state file: not JSON/);
    expect(refusal("[]")).toMatch(/: not an object$/);
    expect(refusal(JSON.stringify({ ...netnsState(), isolation: "vm" }))).toMatch(
      /isolation is "vm"; valid: "netns", "loopback"/,
    );
    const { etcd: _, ...noEtcd } = netnsState();
    expect(refusal(JSON.stringify(noEtcd))).toMatch(/etcd is not an object/);
    const badPid = netnsState();
    (badPid.nodes[1] as unknown as Record<string, unknown>).pid = "1001";
    expect(refusal(JSON.stringify(badPid))).toMatch(/nodes\[1\]\.pid is "1001", not a number/);
    expect(refusal(JSON.stringify({ ...netnsState(), keelsondArgs: ["--x", 1] }))).toMatch(/keelsondArgs\[1\] is not a string/);
    expect(refusal(JSON.stringify({ ...netnsState(), network: { id: "ab12" } }))).toMatch(
      /network\.bridge is missing, not a string/,
    );
    const noCert = { ...netnsState(), tls: { ...netnsState().tls, admin: { keyFile: "/tmp/c/tls/admin.key" } } };
    expect(refusal(JSON.stringify(noCert))).toMatch(/tls\.admin\.certFile is missing/);
    const noEtcdCert = { ...netnsState(), tls: { ...netnsState().tls, etcd: undefined } };
    expect(refusal(JSON.stringify(noEtcdCert))).toMatch(/tls\.etcd is not an object/);
    expect(refusal(JSON.stringify({ ...netnsState(), detached: "yes" }))).toMatch(/detached is "yes", not a boolean/);
  });
});
