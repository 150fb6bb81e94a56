import os from "node:os";
import path from "node:path";
import type { KeelsonClient } from "@keelson/sdk";
import { describe, expect, it } from "vitest";
import { QOS_REFRESH_INTERVAL_MS } from "../../src/cluster/volume-attacher.js";
import { LocalCluster, type StartedLocalCluster } from "../../src/local-cluster/local-cluster.js";
import { trackClusters } from "../helpers/clusters.js";
import { canRun } from "../helpers/env.js";
import { codeOf } from "../helpers/errors.js";
import { NbdTestClient } from "../helpers/nbd-client.js";
import { CHUNK, stamp } from "../helpers/stamps.js";

const MIB = 1024 * 1024;
const SIZE = 64 * MIB;
/** Writes per burst of the test: more than the limit's bucket holds, so some must wait on it. */
const WRITES = 24;

const track = trackClusters();

async function twoNodes(): Promise<StartedLocalCluster> {
  const dir = path.join(os.tmpdir(), `keelson-rqos-${process.pid}-${Date.now()}`);
  return track(await LocalCluster.start({ nodes: 2, dir, diskSizeBytes: 256 * MIB, leaseTtlS: 2 }));
}

/** Writes WRITES stamped chunks from `firstId` through the export, in order, and reads each back. */
async function writeAndReadBack(address: string, name: string, firstId: number): Promise<void> {
  const c = await NbdTestClient.open(address, name);
  try {
    for (let i = 0; i < WRITES; i++) {
      const w = await c.write(i * CHUNK, stamp(firstId + i));
      expect(w.error).toBe(0);
    }
    for (let i = 0; i < WRITES; i++) {
      const r = await c.read(i * CHUNK, CHUNK);
      expect(r.error).toBe(0);
      expect(r.data.equals(stamp(firstId + i))).toBe(true);
    }
  } finally {
    await c.disconnect();
  }
}

async function delayedIos(client: KeelsonClient, name: string): Promise<number> {
  return (await client.getVolume({ name })).qosStatus.delayedIos;
}

describe("QoS on replicated volumes", () => {
  it("a replicated volume's limits throttle its frontend; SetVolumeQos through another node changes the record, and the attached node follows it; reservations are refused with INVALID_ARGUMENT", async (t) => {
    if (!canRun({ root: true, tools: ["etcd", "ip", "losetup"] }, t.task.name)) return t.skip();
    const cluster = await twoNodes();
    const [c1, c2] = [cluster.client(0), cluster.client(1)];
    const addr1 = cluster.nodes[0]?.nbdAddress as string;

    // A reservation is a share of one disk; a replicated volume's I/O lands on several.
    expect(
      await codeOf(c1.createVolume({ name: "r", sizeBytes: SIZE, replicas: 2, qos: { limits: {}, reservationIops: 100 } })),
    ).toBe("INVALID_ARGUMENT");

    const limited = { limits: { writeIops: { rate: 20, burst: 2 } } };
    const created = await c1.createVolume({ name: "q", sizeBytes: SIZE, replicas: 2, qos: limited });
    expect(created.qos.limits?.writeIops?.rate).toBe(20);
    await c2.attachVolume({ name: "q", nodeId: "node1" });

    // Writes beyond the bucket wait on the limit: the frontend's QoS counted them, and every byte landed.
    await writeAndReadBack(addr1, "q", 1);
    const afterLimited = await delayedIos(c1, "q");
    expect(afterLimited).toBeGreaterThan(0);
    expect((await c2.getVolume({ name: "q" })).qos.limits?.writeIops?.rate).toBe(20);

    // Lifted through node2: the record changes at once, and node1, where the volume is attached,
    // applies the record's policy to its frontend within the refresh interval.
    const lifted = await c2.setVolumeQos({ name: "q", qos: { limits: {} } });
    expect(lifted.qos.limits?.writeIops).toBeUndefined();
    expect((await c1.getVolume({ name: "q" })).qos.limits?.writeIops).toBeUndefined();
    await new Promise((r) => setTimeout(r, 3 * QOS_REFRESH_INTERVAL_MS));
    await writeAndReadBack(addr1, "q", 1000);
    expect(await delayedIos(c1, "q")).toBe(afterLimited);

    // A reservation set later is refused the same way, and the record keeps what it had.
    expect(await codeOf(c1.setVolumeQos({ name: "q", qos: { limits: {}, reservationIops: 50 } }))).toBe("INVALID_ARGUMENT");
    expect((await c1.getVolume({ name: "q" })).qos.reservationIops).toBe(0);
  });
});
