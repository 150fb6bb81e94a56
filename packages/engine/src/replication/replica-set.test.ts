import { describe, expect, it } from "vitest";
import type { ReplicaIo } from "./local-replica.js";
import { REGION_BYTES, RegionMap } from "./region-map.js";
import {
  newReplica,
  type Replica,
  ReplicaSet,
  replicaStatus,
  setHealthy,
  setRebuilding,
  setRebuilt,
  volumeState,
} from "./replica-set.js";

const SIZE_BYTES = 16 * REGION_BYTES;

/** A replica client that only records whether it was closed. */
function fakeClient(): ReplicaIo & { closed: boolean } {
  return {
    sizeBytes: SIZE_BYTES,
    closed: false,
    read: async (_offset, length) => Buffer.alloc(length),
    write: async () => undefined,
    zero: async () => undefined,
    flush: async () => undefined,
    blockStatus: async (_offset, length) => [{ lengthBytes: length, status: "data" }],
    saveActivity: async () => undefined,
    close() {
      this.closed = true;
    },
  };
}

function healthy(nodeId: string): Replica {
  const r = newReplica(nodeId, "", 0);
  r.inRecord = true;
  setHealthy(r, fakeClient());
  return r;
}

function set(replicas: Replica[]): ReplicaSet {
  return new ReplicaSet({ name: "v", epoch: 3, sizeBytes: SIZE_BYTES, readOnly: false }, replicas);
}

describe("ReplicaSet", () => {
  it("a healthy replica that fails a write is faulted with what it may lack: the write and every region not yet flushed on it", () => {
    const a = healthy("a");
    const b = healthy("b");
    const replicas = set([a, b]);
    replicas.beforeSend({ offset: 2 * REGION_BYTES, length: 4096 }); // unflushed on both
    const flush = replicas.beforeSend(null); // region 2 now in a flush in flight
    replicas.beforeSend({ offset: 5 * REGION_BYTES, length: 4096 }); // unflushed again
    const client = a.is.state === "healthy" ? a.is.client : null;
    replicas.fault(a, new Error("timed out"), 120, { offset: 9 * REGION_BYTES, length: 4096 });
    replicas.flushed(a, flush.get(a));
    expect(a.is.state).toBe("faulted");
    expect((client as ReturnType<typeof fakeClient>).closed).toBe(true);
    if (a.is.state !== "faulted" || a.is.missing === null) throw new Error("expected a faulted replica with known regions");
    expect([...a.is.missing]).toEqual([2, 5, 9]);
    expect(replicas.unrecorded.has("a")).toBe(true);
    expect(replicas.maxStallMs).toBe(120);
    // Later writes add to what it lacks; it takes none of them.
    replicas.beforeSend({ offset: 12 * REGION_BYTES, length: 4096 });
    expect([...a.is.missing]).toEqual([2, 5, 9, 12]);
    expect(replicas.writable().map((t) => t.replica.nodeId)).toEqual(["b"]);
    expect(volumeState(replicas.list.map(replicaStatus))).toBe("degraded");
  });

  it("grown: a replica faulted before the volume grew misses the writes past the old end too (its rebuild copies them), and one faulted after covers them as well", () => {
    const [a, b, c] = [healthy("a"), healthy("b"), healthy("c")];
    const replicas = set([a, b, c]);
    replicas.fault(a, new Error("gone"), 0, null);
    replicas.grow(2 * SIZE_BYTES);
    replicas.beforeSend({ offset: SIZE_BYTES + 3 * REGION_BYTES, length: 4096 }); // unflushed on b and c, missed by a
    replicas.fault(b, new Error("gone"), 0, null);
    replicas.beforeSend({ offset: SIZE_BYTES + 5 * REGION_BYTES, length: 4096 }); // missed by a and b
    const missing = (r: Replica) => (r.is.state === "faulted" && r.is.missing ? [...r.is.missing] : null);
    expect(missing(a)).toEqual([16 + 3, 16 + 5]);
    expect(missing(b)).toEqual([16 + 3, 16 + 5]);
  });

  it("a full rebuild cut short stays a full rebuild; an incremental one keeps its regions and adds the unflushed ones", () => {
    const full = newReplica("f", "out of sync at attach", 1_000);
    const part = newReplica("p", "", 0);
    const replicas = set([healthy("a"), full, part]);
    if (part.is.state !== "faulted") throw new Error("expected faulted");
    part.is.missing = new RegionMap(SIZE_BYTES);
    part.is.missing.add(7);
    if (full.is.state !== "faulted" || part.is.state !== "faulted") throw new Error("expected faulted");
    setRebuilding(full, fakeClient(), full.is, SIZE_BYTES);
    setRebuilding(part, fakeClient(), part.is, REGION_BYTES);
    expect(volumeState(replicas.list.map(replicaStatus))).toBe("rebuilding");
    replicas.beforeSend({ offset: 3 * REGION_BYTES, length: 1 });
    replicas.fault(full, new Error("gone"), 0, null);
    replicas.fault(part, new Error("gone"), 0, null);
    expect(full.is.state === "faulted" && full.is.missing).toBeNull();
    expect(part.is.state === "faulted" && part.is.missing ? [...part.is.missing] : null).toEqual([3, 7]);
    expect(replicas.maxStallMs).toBe(0);
  });

  it("status: a rebuilding replica shows its progress, and once healthy still shows the rebuild that made it so", () => {
    const r = newReplica("n", "unreachable at attach: refused", 5_000);
    if (r.is.state !== "faulted") throw new Error("expected faulted");
    r.is.missing = new RegionMap(SIZE_BYTES);
    r.is.missing.add(1);
    const rebuilding = setRebuilding(r, fakeClient(), r.is, REGION_BYTES);
    rebuilding.copiedBytes = REGION_BYTES;
    expect(replicaStatus(r)).toMatchObject({
      state: "rebuilding",
      reason: "unreachable at attach: refused",
      faultedAtMs: 5_000,
      rebuiltBytes: REGION_BYTES,
      rebuildTotalBytes: REGION_BYTES,
      fullRebuild: false,
    });
    setRebuilt(r, rebuilding);
    expect(replicaStatus(r)).toEqual({
      nodeId: "n",
      state: "healthy",
      reason: "",
      faultedAtMs: 5_000,
      rebuiltBytes: REGION_BYTES,
      rebuildTotalBytes: REGION_BYTES,
      fullRebuild: false,
      lastRebuild: null,
    });
  });

  it("follows the leader's replica set: adds placed replicas faulted, drops faulted ones no longer wanted", () => {
    const gone = newReplica("gone", "down", 1);
    gone.inRecord = true;
    const replicas = set([healthy("a"), gone]);
    replicas.unrecorded.add("gone");
    replicas.follow(["a", "new"]);
    expect(replicas.list.map((r) => `${r.nodeId}:${r.is.state}`)).toEqual(["a:healthy", "new:faulted"]);
    expect(replicas.unrecorded.has("gone")).toBe(false);
  });
});
