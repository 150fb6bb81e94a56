// Replicas stay identical under overlapping writes while replicas fail and are
// rebuilt. fio writes 4-64 KiB blocks at random from two connections
// (multi-conn) at queue depth 16 each while a third trims whole extents, so
// writes in flight overlap, often in extents being allocated; in each round one fault is injected (a replica's link
// cut and healed, or its process killed -9 and restarted), the writer stops,
// the volume heals, and every replica is read back on its own node and
// compared byte for byte.
import os from "node:os";
import path from "node:path";
import type { Attachment } from "@keelson/sdk";
import { describe, expect, it } from "vitest";
import { LocalCluster, type StartedLocalCluster } from "../../src/local-cluster/local-cluster.js";
import { trackClusters } from "../helpers/clusters.js";
import { canRun } from "../helpers/env.js";
import { run } from "../helpers/process.js";
import { readAll } from "../helpers/stamps.js";

const MIB = 1024 * 1024;
const SIZE = 32 * MIB;
/** Where fio writes: the whole volume. */
const REGION = SIZE;
/** Seconds fio writes in each round; the fault lands a third of the way in. */
const ROUND_S = 6;
type Fault = "partition node3" | "kill -9 node2" | "none";
const ROUNDS: readonly Fault[] = ["none", "partition node3", "kill -9 node2", "partition node3", "none"];

const track = trackClusters();

function fio(address: string, seed: number): ReturnType<typeof run> {
  return run(
    "fio",
    [
      "--ioengine=nbd",
      `--uri=nbd://${address}/db`,
      `--size=${REGION}`,
      "--time_based",
      `--runtime=${ROUND_S}`,
      `--randseed=${seed}`,
      "--group_reporting",
      "--output-format=json",
      // Writers: each write a fresh pattern, so two orders of the same writes leave different bytes.
      "--name=write",
      "--rw=randwrite",
      "--bsrange=4k-64k",
      "--numjobs=2",
      "--iodepth=16",
      "--refill_buffers",
      // A trimmer frees whole extents under them, so writes keep landing in extents being allocated.
      "--name=trim",
      "--rw=randtrim",
      "--bs=1m",
      "--iodepth=2",
      "--rate_iops=100",
    ],
    { timeoutMs: (ROUND_S + 60) * 1000 },
  );
}

async function waitHealthy(cluster: StartedLocalCluster, timeoutMs = 60_000): Promise<Attachment> {
  const client = cluster.client(0);
  const deadline = Date.now() + timeoutMs;
  let last: Attachment | null = null;
  while (Date.now() < deadline) {
    last = await client.getAttachment({ name: "db" });
    if (last.state === "healthy" && last.replicas.every((r) => r.state === "healthy")) return last;
    await new Promise((r) => setTimeout(r, 200));
  }
  throw new Error(`volume not healthy after ${timeoutMs} ms: ${JSON.stringify(last)}`);
}

/** Each replica read on its own node under `epoch`; the index of the first 4 KiB block where one differs from node1's. */
async function compareReplicas(cluster: StartedLocalCluster, epoch: number): Promise<string[]> {
  const images: Buffer[] = [];
  for (const n of cluster.nodes) images.push(await readAll(n.nbdSocket, `db#${epoch}`, SIZE));
  const differences: string[] = [];
  const first = images[0] as Buffer;
  images.forEach((image, k) => {
    if (k === 0 || image.equals(first)) return;
    let blocks = 0;
    let firstBlock = -1;
    for (let at = 0; at < SIZE; at += 4096) {
      if (image.subarray(at, at + 4096).equals(first.subarray(at, at + 4096))) continue;
      blocks++;
      if (firstBlock < 0) firstBlock = at / 4096;
    }
    differences.push(`node${k + 1} differs from node1 in ${blocks} 4 KiB blocks (first ${firstBlock})`);
  });
  return differences;
}

describe("overlapping writes under replica faults", () => {
  it(`${ROUNDS.length} rounds of 2 x qd16 fio randwrite 4-64 KiB over ${REGION / MIB} MiB with a fault each (${ROUNDS.join(", ")}): after each, every replica is byte for byte equal`, async (t) => {
    if (!canRun({ root: true, tools: ["etcd", "ip", "losetup", "fio"] }, t.task.name)) return t.skip();
    const dir = path.join(os.tmpdir(), `keelson-overlap-${process.pid}-${Date.now()}`);
    const cluster = track(await LocalCluster.start({ nodes: 3, dir, diskSizeBytes: 256 * MIB }));
    const n1 = cluster.client(0);
    await n1.createVolume({ name: "db", sizeBytes: SIZE, replicas: 3 });
    const att = await n1.attachVolume({ name: "db", replicaTimeoutMs: 1000 });
    expect(att.replicas.map((r) => r.nodeId).sort()).toEqual(["node1", "node2", "node3"]);
    const address = cluster.nodes[0]?.nbdAddress as string;
    for (const [round, fault] of ROUNDS.entries()) {
      const writer = fio(address, round + 1);
      await new Promise((r) => setTimeout(r, (ROUND_S * 1000) / 3));
      if (fault === "partition node3") {
        await cluster.partition(2);
        await new Promise((r) => setTimeout(r, 2_500));
        await cluster.heal(2);
      } else if (fault === "kill -9 node2") {
        await cluster.kill9(1);
        await new Promise((r) => setTimeout(r, 1_000));
        await cluster.startNode(1);
      }
      const out = await writer;
      const job = JSON.parse(out.stdout.slice(out.stdout.indexOf("{"))) as {
        jobs: Array<{ error: number; write: { io_bytes: number } }>;
      };
      expect(job.jobs[0]?.error, `round ${round} (${fault}): fio error`).toBe(0);
      const healed = await waitHealthy(cluster);
      const differences = await compareReplicas(cluster, healed.epoch);
      console.log(
        `round ${round} (${fault}): fio wrote ${((job.jobs[0]?.write.io_bytes ?? 0) / MIB).toFixed(0)} MiB; rebuilds ${healed.rebuildsCompleted}; ${differences.length === 0 ? "replicas equal" : differences.join("; ")}`,
      );
      expect(differences, `round ${round} (${fault})`).toEqual([]);
    }
  }, 300_000);
});
