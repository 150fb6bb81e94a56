import os from "node:os";
import path from "node:path";
import { describe, expect, it } from "vitest";
import { LocalCluster } from "../../src/local-cluster/local-cluster.js";
import { trackClusters } from "../helpers/clusters.js";
import { canRun } from "../helpers/env.js";
import { codeOf } from "../helpers/errors.js";
import { NbdTestClient } from "../helpers/nbd-client.js";
import { CHUNK, readAll as readAllOf, stamp } from "../helpers/stamps.js";
import { waitFor } from "../helpers/wait.js";

const MIB = 1024 * 1024;
const SIZE = 32 * MIB;
const CHUNKS = SIZE / CHUNK;
const WRITERS = 16;
/** Snapshots taken during the workload: each must be the same point on every replica. */
const ROUNDS = 8;

function readAll(address: string, name: string): Promise<Buffer> {
  return readAllOf(address, name, SIZE);
}

const track = trackClusters();

describe("snapshots of replicated volumes", () => {
  it("taken mid-workload through any node: every replica holds the same point in time, with every write acknowledged before the call and none sent after it; listed with its holders; deleted everywhere; taken of a detached volume too; a revert (it would change one replica only) is refused", async (t) => {
    if (!canRun({ root: true, tools: ["etcd", "ip", "losetup"] }, t.task.name)) return t.skip();
    const dir = path.join(os.tmpdir(), `keelson-rsnap-${process.pid}-${Date.now()}`);
    const cluster = track(await LocalCluster.start({ nodes: 3, dir, diskSizeBytes: 256 * MIB, leaseTtlS: 2 }));
    const [c1, c2, c3] = [cluster.client(0), cluster.client(1), cluster.client(2)];
    const addr = (i: number) => cluster.nodes[i]?.nbdAddress as string;
    await c1.createVolume({ name: "db", sizeBytes: SIZE, replicas: 3 });
    await c1.attachVolume({ name: "db" });

    // Writers own disjoint chunks; ids grow, so "sent after the call returned" is an id bound.
    const lastAcked = new Map<number, number>();
    let nextId = 1;
    /** Writes acknowledged so far: the workload is under way once each writer has one, and goes on between snapshots. */
    let acked = 0;
    let running = true;
    const writers = Array.from({ length: WRITERS }, async (_, w) => {
      const c = await NbdTestClient.open(addr(0), "db");
      for (let i = 0; running; i++) {
        const chunk = w + WRITERS * (i % (CHUNKS / WRITERS));
        const id = nextId++;
        const r = await c.write(chunk * CHUNK, stamp(id));
        if (r.error !== 0) throw new Error(`write ${id} failed with NBD error ${r.error}`);
        lastAcked.set(chunk, id);
        acked++;
      }
      await c.disconnect();
    });
    await waitFor(() => acked >= WRITERS, { what: "the workload under way", timeoutMs: 30_000 });
    const taken: { name: string; ackedBefore: Map<number, number>; firstIdAfter: number }[] = [];
    for (let round = 1; round <= ROUNDS; round++) {
      const ackedBefore = new Map(lastAcked);
      // Through node3: the call goes to node1, where the volume is attached writable.
      const snap = await c3.createSnapshot({ volume: "db", name: `s${round}`, labels: { app: "pg" } });
      taken.push({ name: snap.name, ackedBefore, firstIdAfter: nextId });
      expect([...snap.holders].sort()).toEqual(["node1", "node2", "node3"]);
      expect(snap.export.exportName).toBe(`db@s${round}`);
      const ackedAtSnapshot = acked;
      await waitFor(() => acked >= ackedAtSnapshot + WRITERS, { what: `writes acknowledged after s${round}`, timeoutMs: 30_000 });
    }
    running = false;
    await Promise.all(writers);

    let newer = 0;
    for (const { name, ackedBefore, firstIdAfter } of taken) {
      const exp = `db@${name}`;
      const images = [await readAll(addr(0), exp), await readAll(addr(1), exp), await readAll(addr(2), exp)];
      expect((images[1] as Buffer).equals(images[0] as Buffer), `node2's ${name} equals node1's`).toBe(true);
      expect((images[2] as Buffer).equals(images[0] as Buffer), `node3's ${name} equals node1's`).toBe(true);
      const image = images[0] as Buffer;
      for (let chunk = 0; chunk < CHUNKS; chunk++) {
        const got = Number(image.readBigUInt64BE(chunk * CHUNK));
        const torn = got !== 0 && !image.subarray(chunk * CHUNK, (chunk + 1) * CHUNK).equals(stamp(got));
        expect(torn, `chunk ${chunk} torn in ${name}`).toBe(false);
        expect(got, `chunk ${chunk} of ${name} holds write ${got}, sent after the call returned`).toBeLessThan(firstIdAfter);
        const before = ackedBefore.get(chunk) ?? 0;
        expect(got, `chunk ${chunk} of ${name} misses write ${before}, acknowledged before the call`).toBeGreaterThanOrEqual(
          before,
        );
        if (got > before) newer++;
      }
    }
    console.log(
      `replicated snapshots mid-workload: ${ROUNDS} taken while ${nextId - 1} writes went on; each identical on 3 replicas; ${newer} chunks hold a write made during the call`,
    );
    for (const { name } of taken.slice(1)) await c1.deleteSnapshot({ volume: "db", name });

    // Idempotent by name; visible with its holders from any node.
    expect((await c2.createSnapshot({ volume: "db", name: "s1", labels: { app: "pg" } })).name).toBe("s1");
    expect([...(await c2.getSnapshot({ volume: "db", name: "s1" })).holders].sort()).toEqual(["node1", "node2", "node3"]);
    expect((await c3.listSnapshots({ volume: "db" })).map((s) => [s.name, s.holders.length])).toEqual([["s1", 3]]);

    // Refused: it would change one node's replica only.
    expect(await codeOf(c2.revertVolume({ name: "db", snapshot: "s1" }))).toBe("INVALID_ARGUMENT");

    // Deleted on every holder through one call.
    await c2.deleteSnapshot({ volume: "db", name: "s1" });
    for (const c of [c1, c2, c3]) expect(await codeOf(c.getSnapshot({ volume: "db", name: "s1" }))).toBe("SNAPSHOT_NOT_FOUND");
    expect(await codeOf(NbdTestClient.open(addr(2), "db@s1"))).not.toBe("ok");

    // Detached cleanly: the idle replicas are equal, and each takes the snapshot.
    const live = await readAll(addr(0), "db");
    await c1.detachVolume({ name: "db" });
    const s2 = await c2.createSnapshot({ volume: "db", name: "s2" });
    expect([...s2.holders].sort()).toEqual(["node1", "node2", "node3"]);
    for (const i of [0, 1, 2]) expect((await readAll(addr(i), "db@s2")).equals(live), `node${i + 1}'s s2`).toBe(true);

    // Attached writable on a node that is gone: no snapshot until it is taken over or detached.
    await c1.attachVolume({ name: "db" });
    await cluster.kill9(0);
    expect(await codeOf(c2.createSnapshot({ volume: "db", name: "s3" }))).toBe("UNAVAILABLE");
  }, 120_000);
});
