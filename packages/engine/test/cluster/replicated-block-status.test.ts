import os from "node:os";
import path from "node:path";
import { describe, expect, it } from "vitest";
import { LocalCluster } from "../../src/local-cluster/local-cluster.js";
import { allocationMap, type MapRun } from "../helpers/allocation-map.js";
import { trackClusters } from "../helpers/clusters.js";
import { canRun } from "../helpers/env.js";
import { run } from "../helpers/process.js";

const MIB = 1024 * 1024;
const track = trackClusters();

describe("block status of a replicated volume", () => {
  it("nbdinfo --map through the frontend shows the replicas' allocation, from the local replica and from a peer's over the replica protocol", async (t) => {
    if (!canRun({ root: true, tools: ["etcd", "ip", "losetup", "nbdinfo", "qemu-io"] }, t.task.name)) return t.skip();
    const dir = path.join(os.tmpdir(), `keelson-rbs-${process.pid}-${Date.now()}`);
    const cluster = track(await LocalCluster.start({ nodes: 3, dir, diskSizeBytes: 256 * MIB, leaseTtlS: 2 }));
    await cluster.client(0).createVolume({ name: "db", sizeBytes: 16 * MIB, replicas: 2 });
    const first = await cluster.client(0).attachVolume({ name: "db", replicaTimeoutMs: 2000 });
    const holders = first.replicas.map((r) => r.nodeId);
    const uri = (i: number) => `nbd://${cluster.nodes[i]?.nbdAddress}/db`;
    const io = (cmd: string) => run("qemu-io", ["-f", "raw", "-c", cmd, uri(0)]);
    await io("write -P 0x11 0 8k");
    await io("write -P 0x22 5M 64k");
    await io("write -z -u 5M 32k");
    const expected: MapRun[] = [
      { offset: 0, length: 8192, type: 0 },
      { offset: 8192, length: 5 * MIB + 32 * 1024 - 8192, type: 3 },
      { offset: 5 * MIB + 32 * 1024, length: 32 * 1024, type: 0 },
      { offset: 5 * MIB + 64 * 1024, length: 11 * MIB - 64 * 1024, type: 3 },
    ];
    expect(await allocationMap(uri(0))).toEqual(expected);
    await cluster.client(0).detachVolume({ name: "db" });

    // A node without a replica: its frontend asks a peer's replica over the replica protocol.
    const outsider = [0, 1, 2].find((i) => !holders.includes(`node${i + 1}`));
    expect(outsider, `replicas on ${holders.join(", ")}`).toBeDefined();
    const at = outsider as number;
    await cluster.client(at).attachVolume({ name: "db", replicaTimeoutMs: 2000 });
    expect(await allocationMap(uri(at))).toEqual(expected);
    await run("qemu-io", ["-f", "raw", "-c", "read -P 0x22 5275648 32k", uri(at)]);
    await run("qemu-io", ["-f", "raw", "-c", "read -P 0 8k 1M", uri(at)]);
    await cluster.client(at).detachVolume({ name: "db" });
  });
});
