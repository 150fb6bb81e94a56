import os from "node:os";
import path from "node:path";
import { describe, expect, it } from "vitest";
import { LocalCluster, type StartedLocalCluster } from "../src/cluster/local-cluster.js";
import { canRun } from "./helpers/env.js";
import { NbdTestClient } from "./helpers/nbd-client.js";

const MIB = 1024 * 1024;
const CHUNK = 64 * 1024;
const SIZE = 32 * MIB;
const WRITERS = 4;

function stamp(id: number): Buffer {
  const b = Buffer.alloc(CHUNK);
  for (let at = 0; at < CHUNK; at += 8) b.writeBigUInt64BE(BigInt(id), at);
  return b;
}

/**
 * Writers that own disjoint chunks and write them one at a time, so each
 * chunk's last acknowledged write is known exactly. Runs until `stop()`.
 */
function workload(address: string, name: string) {
  const lastAcked = new Map<number, number>();
  const errors: number[] = [];
  let nextId = 1;
  let running = true;
  const chunks = SIZE / CHUNK;
  const writer = async (w: number): Promise<void> => {
    const c = await NbdTestClient.open(address, name);
    for (let i = 0; running; i++) {
      const chunk = w + WRITERS * (i % (chunks / WRITERS));
      const id = nextId++;
      const r = await c.write(chunk * CHUNK, stamp(id));
      if (r.error === 0) lastAcked.set(chunk, id);
      else errors.push(r.error);
    }
    c.close();
  };
  const done = Promise.all(Array.from({ length: WRITERS }, (_, w) => writer(w)));
  return {
    lastAcked,
    errors,
    writes: () => nextId - 1,
    stop: async () => {
      running = false;
      await done;
    },
  };
}

/** The whole volume through export `name` on `address`, in 4 MiB requests. */
async function readAll(address: string, name: string): Promise<Buffer> {
  const c = await NbdTestClient.open(address, name);
  const parts: Buffer[] = [];
  for (let at = 0; at < SIZE; at += 4 * MIB) {
    const r = await c.read(at, 4 * MIB);
    if (r.error !== 0) throw new Error(`read of ${name} at ${at} failed with NBD error ${r.error}`);
    parts.push(r.data);
  }
  c.close();
  return Buffer.concat(parts);
}

/** Every acknowledged chunk holds its last acknowledged write, read through `name` on `address`. */
async function verifyAcked(address: string, name: string, lastAcked: Map<number, number>): Promise<void> {
  const image = await readAll(address, name);
  for (const [chunk, id] of lastAcked) {
    expect(image.readBigUInt64BE(chunk * CHUNK), `chunk ${chunk}`).toBe(BigInt(id));
  }
}

async function threeNodeCluster(): Promise<StartedLocalCluster> {
  const dir = path.join(os.tmpdir(), `keelson-repl-${process.pid}-${Date.now()}`);
  return LocalCluster.start({ nodes: 3, dir, diskSizeBytes: 512 * MIB, leaseTtlS: 2 });
}

describe("synchronous replication", () => {
  it("replica node killed -9 mid-write: no write fails, the volume runs degraded, every acknowledged write reads back and survivors are identical", async (t) => {
    if (!canRun({ root: true, tools: ["etcd", "ip", "losetup"] }, t.task.name)) return t.skip();
    await using cluster = await threeNodeCluster();
    const n1 = cluster.client(0);
    await n1.createVolume({ name: "db", sizeBytes: SIZE, replicas: 3 });
    const att = await n1.attachVolume({ name: "db", replicaTimeoutMs: 1000 });
    expect(att).toMatchObject({ state: "healthy", epoch: 1 });
    expect(att.replicas.map((r) => r.nodeId).sort()).toEqual(["node1", "node2", "node3"]);
    const load = workload(cluster.nodes[0]?.nbdAddress as string, "db");
    await new Promise((r) => setTimeout(r, 800));
    await cluster.kill9(2);
    await new Promise((r) => setTimeout(r, 1500));
    await load.stop();
    expect(load.errors).toEqual([]);
    const after = await n1.getAttachment({ name: "db" });
    console.log(
      `replica node3 killed: ${load.writes()} writes, 0 failed; volume ${after.state}, replica stall ${after.maxStallMs} ms`,
    );
    expect(after.state).toBe("degraded");
    expect(after.replicas.find((r) => r.nodeId === "node3")?.state).toBe("faulted");
    await verifyAcked(cluster.nodes[0]?.nbdAddress as string, "db", load.lastAcked);
    // The surviving replicas hold the same bytes (read directly, under the current epoch).
    const images: Buffer[] = [];
    for (const i of [0, 1]) images.push(await readAll(cluster.nodes[i]?.nbdAddress as string, `db#${after.epoch}`));
    expect((images[0] as Buffer).equals(images[1] as Buffer)).toBe(true);
  }, 120_000);
});
