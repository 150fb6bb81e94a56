import { KeelsonError } from "@keelson/sdk";
import { describe, expect, it } from "vitest";
import type { ReplicaIo } from "./local-replica.js";
import { RangeGate } from "./range-gate.js";
import { Rebuilder, type RebuildHost } from "./rebuild.js";
import { UNTHROTTLED } from "./rebuild-throttle.js";
import { REGION_BYTES } from "./region-map.js";
import { newReplica, type Replica, ReplicaSet, setHealthy } from "./replica-set.js";

const REGIONS = 48;
const SIZE_BYTES = REGIONS * REGION_BYTES;
const FLUSH_BYTES = 8 * REGION_BYTES;

/** The replica being rebuilt: data written and not yet flushed is what its node holds dirty. */
interface Target extends ReplicaIo {
  written: Map<number, Buffer>;
  unflushed: number;
  maxUnflushed: number;
  flushes: number;
}

/** A replica whose writes land at once and whose flushes take a few turns (they run while the copy goes on). */
function target(failFlush?: number): Target {
  const t: Target = {
    sizeBytes: SIZE_BYTES,
    written: new Map(),
    unflushed: 0,
    maxUnflushed: 0,
    flushes: 0,
    read: async (_offset, length) => Buffer.alloc(length),
    write: async (offset, data) => {
      t.written.set(offset, Buffer.from(data));
      t.unflushed += data.length;
      t.maxUnflushed = Math.max(t.maxUnflushed, t.unflushed);
    },
    zero: async () => undefined,
    flush: async () => {
      t.flushes++;
      const n = t.flushes;
      // What it writes back is what was written before it began; later writes stay dirty.
      const covered = t.unflushed;
      for (let i = 0; i < 5; i++) await new Promise((r) => setImmediate(r));
      if (n === failFlush) throw new KeelsonError({ code: "INTERNAL", message: "fdatasync failed" });
      t.unflushed -= covered;
    },
    blockStatus: async (_offset, length) => [{ lengthBytes: length, status: "data" }],
    saveActivity: async () => undefined,
    close: () => undefined,
  };
  return t;
}

/** Region `i` of the source: data in even regions, holes in odd ones. */
function sourceRegion(i: number): Buffer {
  return i % 2 === 0 ? Buffer.alloc(REGION_BYTES, (i % 250) + 1) : Buffer.alloc(REGION_BYTES);
}

function host(replicas: ReplicaSet, client: ReplicaIo): RebuildHost & { inSync: string[]; readInto: Set<ArrayBufferLike> } {
  const inSync: string[] = [];
  /** The memory of the buffers the rebuild read into (none when it asked for new ones). */
  const readInto = new Set<ArrayBufferLike>();
  return {
    inSync,
    readInto,
    name: "v",
    sizeBytes: SIZE_BYTES,
    replicas,
    gate: new RangeGate(),
    throttle: UNTHROTTLED,
    closed: false,
    fenced: false,
    markFenced: () => undefined,
    read: async (offset, _length, into) => {
      const data = sourceRegion(offset / REGION_BYTES);
      if (!into) return data;
      readInto.add(into.buffer);
      data.copy(into);
      return into;
    },
    recordFaults: async () => [],
    saveActivity: async () => undefined,
    recordInSync: async (nodeId) => {
      inSync.push(nodeId);
    },
    connect: async () => client,
    rebuilt: () => undefined,
  };
}

function replicaPair(): { source: Replica; returning: Replica; replicas: ReplicaSet } {
  const source = newReplica("a", "", 0);
  source.inRecord = true;
  setHealthy(source, target());
  const returning = newReplica("b", "it went away", 1); // faulted, nothing known: a full rebuild
  const replicas = new ReplicaSet({ name: "v", epoch: 2, sizeBytes: SIZE_BYTES, readOnly: false }, [source, returning]);
  return { source, returning, replicas };
}

describe("Rebuilder", () => {
  it("flushes the replica as it copies: what it copied and did not flush stays within two flush intervals, and the copy is whole", async () => {
    const { returning, replicas } = replicaPair();
    const t = target();
    const h = host(replicas, t);
    await new Rebuilder(h, FLUSH_BYTES).reconnectAndRebuild(returning);
    expect(returning.is.state).toBe("healthy");
    expect(h.inSync).toEqual(["b"]);
    for (let i = 0; i < REGIONS; i += 2) expect(t.written.get(i * REGION_BYTES)?.equals(sourceRegion(i))).toBe(true);
    expect(t.written.size).toBe(REGIONS / 2); // holes were zeroed, not written
    // 24 MiB of data at one flush per 8 MiB: flushes along the way, and the last one at the end.
    expect(t.flushes).toBeGreaterThanOrEqual(3);
    // Four regions copy at once, so up to three more may land while the copy waits for a flush.
    expect(t.maxUnflushed).toBeLessThanOrEqual(2 * FLUSH_BYTES + 3 * REGION_BYTES);
    expect(t.unflushed).toBe(0);
  });

  it("reads every region into one of a few buffers it reuses (one per region copied at once), not a new one each", async () => {
    const { returning, replicas } = replicaPair();
    const t = target();
    const h = host(replicas, t);
    await new Rebuilder(h, FLUSH_BYTES).reconnectAndRebuild(returning);
    expect(returning.is.state).toBe("healthy");
    for (let i = 0; i < REGIONS; i += 2) expect(t.written.get(i * REGION_BYTES)?.equals(sourceRegion(i))).toBe(true);
    expect(h.readInto.size).toBeGreaterThan(0);
    expect(h.readInto.size).toBeLessThanOrEqual(4);
  });

  it("a flush that fails while it copies fails the rebuild: the replica stays faulted and is not recorded in sync", async () => {
    const { returning, replicas } = replicaPair();
    const t = target(1);
    const h = host(replicas, t);
    await new Rebuilder(h, FLUSH_BYTES).reconnectAndRebuild(returning);
    expect(returning.is.state).toBe("faulted");
    if (returning.is.state === "faulted") expect(returning.is.reason).toContain("fdatasync failed");
    expect(h.inSync).toEqual([]);
    expect(returning.lastRebuild).toBeNull();
  });
});
