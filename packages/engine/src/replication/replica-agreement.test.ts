// What the replicas of a volume agree on: the order of overlapping writes
// (each replica runs its writes concurrently and may finish them in any
// order, so the frontend sends overlapping writes one at a time, in one order
// every replica applies), the answer to a write every replica refuses, and
// the write quorum.
import { KeelsonError } from "@keelson/sdk";
import { afterEach, describe, expect, it } from "vitest";
import type { ExportCallback, ExportCatalog, NbdExport } from "../nbd/export.js";
import { NbdServer } from "../nbd/server.js";
import { decodeActivityLog } from "../store/activity-record.js";
import { seededRandom } from "../testing/random.js";
import { RebuildThrottle } from "./rebuild-throttle.js";
import { type OpenOptions, ReplicatedVolume } from "./replicated-volume.js";

const SIZE = 8 * 1024 * 1024;
const BLOCK = 4096;

/**
 * A replica in memory that applies each write after its own random delay, as
 * a disk queue may complete concurrent requests in any order.
 */
class ReorderingReplica implements NbdExport {
  readonly data = Buffer.alloc(SIZE);
  readonly description = "in memory, completes out of order";
  readonly sizeBytes = SIZE;
  readonly readOnly = false;
  readonly #random: () => number;
  /** While set, every write and write-zeroes is refused as a full pool refuses it (nothing changed). */
  full = false;
  constructor(
    readonly name: string,
    seed: number,
  ) {
    this.#random = seededRandom(seed);
  }
  #later(apply: () => void, cb: ExportCallback): void {
    setTimeout(
      () => {
        apply();
        cb(null);
      },
      Math.floor(this.#random() * 4),
    );
  }
  read(offset: number, length: number, buf: Buffer, at: number, cb: ExportCallback): void {
    this.data.copy(buf, at, offset, offset + length);
    cb(null);
  }
  write(offset: number, data: Buffer, _fua: boolean, cb: ExportCallback): void {
    if (this.full) return cb(new KeelsonError({ code: "NO_SPACE", message: "pool is full" }));
    const copy = Buffer.from(data);
    this.events.push(`write:${offset}`);
    this.#later(() => copy.copy(this.data, offset), cb);
  }
  zero(offset: number, length: number, _o: unknown, cb: ExportCallback): void {
    this.#later(() => this.data.fill(0, offset, offset + length), cb);
  }
  flush(cb: ExportCallback): void {
    cb(null);
  }
  /** What happened here, in order: "log:<extents>" for each activity log save, "write:<offset>" for each write taken. */
  readonly events: string[] = [];
  /** While set, activity log saves fail as a replica whose disk cannot keep them. */
  logRefused = false;
  /** While set, the replica cannot be opened (its node is away). */
  away = false;
  saveActivity(payload: Buffer, cb: ExportCallback): void {
    if (this.logRefused) return cb(new KeelsonError({ code: "INTERNAL", message: "metadata write failed" }));
    const log = decodeActivityLog(payload, 1);
    this.events.push(`log:${log.all ? "all" : log.extents.join(",")}`);
    cb(null);
  }
  close(): void {}
}

const cleanups: Array<() => unknown> = [];
afterEach(async () => {
  for (const c of cleanups.splice(0).reverse()) await c();
});

async function twoReplicas(
  seedA: number,
  seedB: number,
  minInSync = 1,
  extra: Partial<OpenOptions> | ((bAddress: string, b: ReorderingReplica) => Partial<OpenOptions>) = {},
) {
  const a = new ReorderingReplica("rv#1", seedA);
  const b = new ReorderingReplica("rv#1", seedB);
  const catalogB: ExportCatalog = {
    list: () => [],
    open: (name) => (name === b.name && !b.away ? b : null),
    describe: (name) => (name === b.name ? { sizeBytes: SIZE, readOnly: false, description: "" } : null),
  };
  const server = new NbdServer(catalogB);
  await server.listen({ tcp: "127.0.0.1:0" });
  cleanups.push(() => server.close());
  const rv = await ReplicatedVolume.open(
    "rv",
    1,
    [
      { nodeId: "a", replicaAddress: "", inSync: true },
      { nodeId: "b", replicaAddress: server.tcpAddress, inSync: true },
    ],
    "a",
    {
      openLocal: (name) => (name === a.name ? a : null),
      timeoutMs: 10_000,
      minInSync,
      ...(typeof extra === "function" ? extra(server.tcpAddress, b) : extra),
    },
  );
  cleanups.push(() => rv.close());
  return { rv, a, b };
}

/** The first 4 KiB block where the two replicas differ, or -1. */
function firstDifference(x: Buffer, y: Buffer): number {
  for (let at = 0; at < x.length; at += BLOCK) {
    if (!x.subarray(at, at + BLOCK).equals(y.subarray(at, at + BLOCK))) return at / BLOCK;
  }
  return -1;
}

describe("overlapping writes in flight together", () => {
  it("reach every replica in one order: after 3,000 writes, trims and zeroes of 4-64 KiB over 256 KiB, the replicas are byte for byte equal", async () => {
    const { rv, a, b } = await twoReplicas(1, 2);
    const random = seededRandom(42);
    const span = 256 * 1024;
    for (let round = 0; round < 30; round++) {
      const ops = Array.from({ length: 100 }, (_, i) => {
        const length = BLOCK * (1 + Math.floor(random() * 16));
        const offset = BLOCK * Math.floor(random() * ((span - length) / BLOCK + 1));
        const kind = random();
        if (kind < 0.1) return rv.zero(offset, length, true, false, false);
        if (kind < 0.2) return rv.zero(offset, length, false, true, false);
        return rv.write(offset, Buffer.alloc(length, (round * 100 + i) % 251), false);
      });
      await Promise.all(ops);
      const differs = firstDifference(a.data, b.data);
      expect(differs, `round ${round}: replicas differ at block ${differs}`).toBe(-1);
    }
    expect(rv.status().map((r) => r.state)).toEqual(["healthy", "healthy"]);
  });
});

describe("an error every replica returns for a write", () => {
  it("NO_SPACE from every replica is the volume's answer: the client gets NO_SPACE, no replica is faulted, and writes go on once space is back", async () => {
    const { rv, a, b } = await twoReplicas(3, 4);
    await rv.write(0, Buffer.alloc(BLOCK, 1), false);
    a.full = true;
    b.full = true;
    const refused = await rv.write(BLOCK, Buffer.alloc(BLOCK, 2), false).catch((e: unknown) => e);
    expect(refused).toMatchObject({ code: "NO_SPACE" });
    expect(rv.status().map((r) => r.state)).toEqual(["healthy", "healthy"]);
    a.full = false;
    b.full = false;
    await rv.write(BLOCK, Buffer.alloc(BLOCK, 3), false);
    expect(firstDifference(a.data, b.data)).toBe(-1);
    expect(a.data[BLOCK]).toBe(3);
  });

  it("NO_SPACE from one replica only faults that replica; the write is acknowledged by the other", async () => {
    const { rv, a, b } = await twoReplicas(5, 6);
    b.full = true;
    await rv.write(0, Buffer.alloc(BLOCK, 7), false);
    expect(rv.status().map((r) => [r.nodeId, r.state])).toEqual([
      ["a", "healthy"],
      ["b", "faulted"],
    ]);
    expect(a.data[0]).toBe(7);
  });
});

describe("the write quorum (minInSync)", () => {
  it("with 2 of 2 required, a write that only one replica took is not acknowledged, and later writes wait, then fail UNAVAILABLE", async () => {
    const { rv, a, b } = await twoReplicas(7, 8, 2);
    await rv.write(0, Buffer.alloc(BLOCK, 1), false);
    // b fails a write the other takes (a fault of b's own, here a full pool on b alone).
    b.full = true;
    const first = await rv.write(BLOCK, Buffer.alloc(BLOCK, 2), false).catch((e: unknown) => e);
    expect(first).toMatchObject({ code: "UNAVAILABLE", message: expect.stringContaining("write quorum is 2") });
    expect(rv.status().map((r) => r.state)).toEqual(["healthy", "faulted"]);
    const next = await rv.write(2 * BLOCK, Buffer.alloc(BLOCK, 3), false).catch((e: unknown) => e);
    expect(next).toMatchObject({ code: "UNAVAILABLE", message: expect.stringContaining("1 replica(s) in sync") });
    // Refused before it was sent: the replica in sync did not take it either.
    expect(a.data[2 * BLOCK]).toBe(0);
    // Reads still serve from the replica in sync.
    expect((await rv.read(0, BLOCK))[0]).toBe(1);
  }, 20_000);

  it("a replica being made equal after a failover (a resync) counts toward the quorum: writes go on during the resync", async () => {
    // The previous frontend's log says "all": b is resynced whole from a, slowly (64 KiB/s).
    const { rv, a, b } = await twoReplicas(11, 12, 2, { resync: "all", rebuildThrottle: new RebuildThrottle(64 * 1024) });
    expect(rv.status().find((r) => r.nodeId === "b")?.state).toBe("rebuilding");
    await rv.write(0, Buffer.alloc(BLOCK, 5), false);
    expect([a.data[0], b.data[0]]).toEqual([5, 5]);
    expect(rv.status().find((r) => r.nodeId === "b")?.state).toBe("rebuilding");
  });

  it("with 1 required (the default), the write is acknowledged by the replica left", async () => {
    const { rv, b } = await twoReplicas(9, 10);
    b.full = true;
    await rv.write(0, Buffer.alloc(BLOCK, 4), false);
    expect(rv.minInSync).toBe(1);
  });
});

describe("the activity log, kept on the replicas", () => {
  it("every replica keeps the log naming an extent before it gets a write to it, and a clean detach empties it on each", async () => {
    const { rv, a, b } = await twoReplicas(13, 14);
    await rv.write(0, Buffer.alloc(BLOCK, 1), false);
    await rv.write(BLOCK, Buffer.alloc(BLOCK, 2), false);
    // The first save (at open) holds nothing; the write to the cold extent 0 waits for one that names it.
    for (const r of [a, b]) expect(r.events).toEqual(["log:", "log:0", "write:0", `write:${BLOCK}`]);
    expect((await rv.detach(false)).clean).toBe(true);
    for (const r of [a, b]) expect(r.events.at(-1)).toBe("log:");
  });

  it("a replica that cannot keep the log is faulted before it gets the write; the other acknowledges it", async () => {
    const { rv, a, b } = await twoReplicas(15, 16);
    b.logRefused = true;
    await rv.write(0, Buffer.alloc(BLOCK, 3), false);
    expect(rv.status().map((r) => [r.nodeId, r.state])).toEqual([
      ["a", "healthy"],
      ["b", "faulted"],
    ]);
    expect(b.events).toEqual(["log:"]);
    expect(a.events).toEqual(["log:", "log:0", "write:0"]);
  });
});

describe("a rebuilt replica and the activity log", () => {
  it("a rebuilt replica that cannot keep the log is not recorded in sync; once it can, it is", async () => {
    const inSync: string[] = [];
    const { rv, b } = await twoReplicas(17, 18, 1, (address) => ({
      hooks: {
        prepareReplica: async (nodeId) => ({ nodeId, replicaAddress: address }),
        recordInSync: async (nodeId) => {
          inSync.push(nodeId);
        },
      },
    }));
    b.full = true;
    await rv.write(0, Buffer.alloc(BLOCK, 1), false);
    expect(rv.status().find((r) => r.nodeId === "b")?.state).toBe("faulted");
    b.full = false;
    b.logRefused = true;
    // Repair passes (1 s apart) reconnect and rebuild it; each ends on the save it cannot keep.
    await new Promise((r) => setTimeout(r, 3_500));
    expect(inSync).toEqual([]);
    expect(rv.status().find((r) => r.nodeId === "b")?.state).not.toBe("healthy");
    b.logRefused = false;
    const deadline = Date.now() + 10_000;
    while (rv.status().find((r) => r.nodeId === "b")?.state !== "healthy" && Date.now() < deadline) {
      await new Promise((r) => setTimeout(r, 100));
    }
    expect(inSync).toEqual(["b"]);
    expect(b.events.at(-1)?.startsWith("log:")).toBe(true);
  }, 20_000);

  it("an in-sync replica not reached at attach is rebuilt over the extents its own log names, not only those of the logs read then", async () => {
    // b is in sync but differs from a in extent 1, which only b's own log names; the logs read at
    // attach (a's) name extent 0 only.
    const EXTENT = 4 * 1024 * 1024;
    const { rv, a, b } = await twoReplicas(19, 20, 1, (address, away) => {
      away.away = true;
      return {
        resync: [{ offset: 0, length: EXTENT }],
        hooks: {
          prepareReplica: async (nodeId) => ({
            nodeId,
            replicaAddress: address,
            keptLog: { extentBytes: EXTENT, all: false, extents: [1] },
          }),
        },
      };
    });
    a.data.fill(1);
    b.data.fill(1, 0, EXTENT);
    b.data.fill(2, EXTENT);
    expect(rv.status().find((r) => r.nodeId === "b")?.state).toBe("faulted");
    b.away = false;
    const deadline = Date.now() + 10_000;
    while (rv.status().find((r) => r.nodeId === "b")?.state !== "healthy" && Date.now() < deadline) {
      await new Promise((r) => setTimeout(r, 100));
    }
    expect(rv.status().find((r) => r.nodeId === "b")?.state).toBe("healthy");
    expect(firstDifference(a.data, b.data)).toBe(-1);
  }, 20_000);
});
