import { describe, expect, it } from "vitest";
import { type ClusterVolumeRecord, refs } from "../metadata/index.js";
import { MemoryMetadataStore } from "../metadata/memory-store.js";
import type { ClusterMembership } from "./membership.js";
import { markOutOfSync, resyncPlanOf } from "./sync-marks.js";

const record = (inSync: string[], minInSync?: number): ClusterVolumeRecord => ({
  name: "db",
  sizeBytes: 1 << 20,
  replicas: ["node1", "node2", "node3"],
  inSync,
  ...(minInSync === undefined ? {} : { minInSync }),
  createdAtMs: 0,
});

async function cluster(inSync: string[], minInSync = 1): Promise<{ m: ClusterMembership; store: MemoryMetadataStore }> {
  const store = new MemoryMetadataStore();
  await store.put(refs.volume("db"), record(inSync, minInSync));
  await store.put(refs.epoch("db"), 3);
  // The marks use the membership's metadata store only.
  return { m: { metadata: store } as unknown as ClusterMembership, store };
}

describe("markOutOfSync", () => {
  it("takes a replica out of the in-sync set under the current epoch", async () => {
    const { m, store } = await cluster(["node1", "node2"]);
    await markOutOfSync(m, "db", "node2", 3);
    expect((await store.get(refs.volume("db")))?.value.inSync).toEqual(["node1"]);
  });

  it("never empties the set: the last in-sync replica stays (held), so its write is not acknowledged", async () => {
    const { m, store } = await cluster(["node1"]);
    expect(await markOutOfSync(m, "db", "node1", 3)).toBe("held");
    expect((await store.get(refs.volume("db")))?.value.inSync).toEqual(["node1"]);
  });

  it("never below the write quorum: with 2 required, 3 in sync may become 2, and 2 stay 2", async () => {
    const { m, store } = await cluster(["node1", "node2", "node3"], 2);
    expect(await markOutOfSync(m, "db", "node2", 3)).toBe("recorded");
    expect(await markOutOfSync(m, "db", "node3", 3)).toBe("held");
    expect((await store.get(refs.volume("db")))?.value.inSync).toEqual(["node1", "node3"]);
  });

  it("a record without minInSync (made before it existed) gets the default quorum for its replicas (2 of 3)", async () => {
    const store = new MemoryMetadataStore();
    await store.put(refs.volume("db"), record(["node1", "node2"]));
    await store.put(refs.epoch("db"), 3);
    const m = { metadata: store } as unknown as ClusterMembership;
    expect(await markOutOfSync(m, "db", "node2", 3)).toBe("held");
  });

  it("a fenced frontend (older epoch) changes nothing: EPOCH_STALE", async () => {
    const { m, store } = await cluster(["node1", "node2"]);
    await expect(markOutOfSync(m, "db", "node2", 2)).rejects.toMatchObject({ code: "EPOCH_STALE" });
    expect((await store.get(refs.volume("db")))?.value.inSync).toEqual(["node1", "node2"]);
  });
});

describe("resyncPlanOf", () => {
  const log = (extents: number[], all = false) => ({ epoch: 3, sequence: 1, extentBytes: 4 << 20, all, extents });

  it("is the union of the replicas' logs, as the byte ranges of their extents", () => {
    expect(resyncPlanOf([log([1, 5]), log([5, 2]), undefined])).toEqual([
      { offset: 4 << 20, length: 4 << 20 },
      { offset: 8 << 20, length: 4 << 20 },
      { offset: 20 << 20, length: 4 << 20 },
    ]);
  });

  it("is everything when one replica's log says so, and nothing when none keeps one", () => {
    expect(resyncPlanOf([log([1]), log([], true)])).toBe("all");
    expect(resyncPlanOf([undefined, undefined])).toEqual([]);
  });
});
