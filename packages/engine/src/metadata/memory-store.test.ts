import { isKeelsonError } from "@keelson/sdk";
import { describe, expect, it } from "vitest";
import { refs } from "./keys.js";
import { MemoryMetadataStore } from "./memory-store.js";
import type { WatchedEvent } from "./store.js";

const volume = { name: "db", sizeBytes: 8, replicas: ["a"], inSync: ["a"], createdAtMs: 1 };

describe("MetadataStore contract (memory store)", () => {
  it("put, get, list and delete round trip typed records; delete of a missing record is no error", async () => {
    const s = new MemoryMetadataStore();
    await s.put(refs.volume("db"), volume);
    await s.put(refs.snapshot("db", "s1"), { volume: "db", name: "s1", holders: ["a"], labels: {}, createdAtMs: 2 });
    await s.put(refs.snapshot("dbx", "s1"), { volume: "dbx", name: "s1", holders: ["a"], labels: {}, createdAtMs: 2 });
    expect((await s.get(refs.volume("db")))?.value).toEqual(volume);
    expect((await s.list("snapshot", "db/")).map((r) => r.ref.id)).toEqual(["db/s1"]);
    expect((await s.list("snapshot")).map((r) => r.ref.id)).toEqual(["db/s1", "dbx/s1"]);
    await s.delete(refs.volume("db"));
    await s.delete(refs.volume("db"));
    expect(await s.get(refs.volume("db"))).toBeNull();
  });

  it("a corrupt stored record fails get and list with METADATA_CORRUPT naming the key", async () => {
    const s = new MemoryMetadataStore();
    s.putRaw(refs.volume("db"), JSON.stringify({ name: "db" }));
    for (const read of [s.get(refs.volume("db")), s.list("volume")]) {
      const error = await read.then(
        () => null,
        (e: unknown) => e,
      );
      expect(isKeelsonError(error, "METADATA_CORRUPT")).toBe(true);
      expect((error as Error).message).toContain("/keelson/v1/volumes/db");
    }
  });

  it("commit applies all writes only while every condition holds: absent, version, epoch value", async () => {
    const s = new MemoryMetadataStore();
    const ref = refs.volume("db");
    expect(await s.commit({ if: [{ ref, version: null }], put: [{ ref, value: volume }] })).toBe(true);
    expect(await s.commit({ if: [{ ref, version: null }], put: [{ ref, value: { ...volume, sizeBytes: 9 } }] })).toBe(false);
    const read = await s.get(ref);
    if (!read) throw new Error("record gone");
    await s.put(refs.epoch("db"), 3);
    const stale = {
      if: [
        { ref: refs.epoch("db"), equals: 2 },
        { ref, version: read.version },
      ],
      put: [{ ref, value: { ...volume, inSync: [] } }],
    };
    expect(await s.commit(stale)).toBe(false);
    expect((await s.get(ref))?.value.inSync).toEqual(["a"]);
    const current = {
      ...stale,
      if: [
        { ref: refs.epoch("db"), equals: 3 },
        { ref, version: read.version },
      ],
    };
    expect(await s.commit(current)).toBe(true);
    expect((await s.get(ref))?.value.inSync).toEqual([]);
    // The version read before the write no longer holds.
    expect(await s.commit({ if: [{ ref, version: read.version }], delete: [ref] })).toBe(false);
  });

  it("a watch from now reports decoded changes in order", async () => {
    const s = new MemoryMetadataStore();
    const seen: WatchedEvent[] = [];
    const w = await s.watch(
      { revision: await s.headRevision(), index: 0 },
      { event: (e) => seen.push(e), error: () => undefined },
    );
    await s.put(refs.epoch("db"), 1); // no event
    await s.put(refs.volume("db"), volume);
    await s.delete(refs.volume("db"));
    await w.cancel();
    await s.put(refs.volume("db"), volume);
    expect(seen.map((e) => e.event)).toEqual([
      { type: "volume", volume: "db", deleted: false, record: volume },
      { type: "volume", volume: "db", deleted: true, record: null },
    ]);
  });
});
