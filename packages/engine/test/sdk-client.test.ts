import path from "node:path";
import { createClient, isKeelsonError } from "@keelson/sdk";
import { describe, expect, it } from "vitest";
import { startDaemon, tempDir } from "./helpers/daemon.js";
import { NbdTestClient } from "./helpers/nbd-client.js";

const MIB = 1024 * 1024;

async function codeOf(p: Promise<unknown>): Promise<string> {
  try {
    await p;
    return "no error";
  } catch (e) {
    if (!isKeelsonError(e)) throw e;
    return e.code;
  }
}

describe("@keelson/sdk against a live engine", () => {
  it("volume lifecycle with typed results", async () => {
    using dir = tempDir("keelson-sdk-");
    await using d = await startDaemon({ poolPath: path.join(dir.path, "pool.img"), poolSize: "512M", dir: dir.path });
    await using c = createClient({ address: d.grpcAddress });
    const v = await c.createVolume({ name: "pg-data", sizeBytes: 64 * MIB, labels: { app: "postgres" } });
    expect(v).toMatchObject({ name: "pg-data", sizeBytes: 64 * MIB, allocatedBytes: 0, state: "healthy", replicas: 1 });
    expect(v.export.nbdTcpUri).toBe(`nbd://${d.nbdAddress}/pg-data`);
    expect(v.export.nbdUnixUri).toBe(`nbd+unix:///pg-data?socket=${d.nbdSocket}`);
    expect(v.createdAt.getTime()).toBeGreaterThan(Date.now() - 60_000);
    expect(await c.createVolume({ name: "pg-data", sizeBytes: 64 * MIB, labels: { app: "postgres" } })).toMatchObject({
      uid: v.uid,
    });
    expect((await c.listVolumes()).map((x) => x.name)).toEqual(["pg-data"]);
    const grown = await c.resizeVolume({ name: "pg-data", sizeBytes: 128 * MIB });
    expect(grown.sizeBytes).toBe(128 * MIB);
    // A client that connects after the resize sees the new size.
    const nbd = await NbdTestClient.open(d.nbdAddress, "pg-data");
    expect(nbd.sizeBytes).toBe(128 * MIB);
    expect((await nbd.write(100 * MIB, Buffer.alloc(MIB, 3))).error).toBe(0);
    expect((await c.getVolume({ name: "pg-data" })).connections).toBe(1);
    expect(await codeOf(c.deleteVolume({ name: "pg-data" }))).toBe("VOLUME_IN_USE");
    const node = await c.getNode();
    expect(node.pool.allocatedBytes).toBe(MIB);
    expect(node.nbdTcpAddress).toBe(d.nbdAddress);
    expect((await c.deleteVolume({ name: "pg-data", force: true })).freedBytes).toBe(MIB);
    expect((await nbd.read(0, 4096)).error).not.toBe(0);
    nbd.close();
    expect(await c.listVolumes()).toEqual([]);
  });

  it("typed errors: ALREADY_EXISTS, VOLUME_NOT_FOUND, INVALID_ARGUMENT, SHRINK_NOT_SUPPORTED", async () => {
    using dir = tempDir("keelson-sdk-err-");
    await using d = await startDaemon({ poolPath: path.join(dir.path, "pool.img"), poolSize: "256M", dir: dir.path });
    await using c = createClient({ address: d.grpcAddress });
    await c.createVolume({ name: "a", sizeBytes: 8 * MIB });
    expect(await codeOf(c.createVolume({ name: "a", sizeBytes: 16 * MIB }))).toBe("ALREADY_EXISTS");
    expect(await codeOf(c.getVolume({ name: "missing" }))).toBe("VOLUME_NOT_FOUND");
    expect(await codeOf(c.deleteVolume({ name: "missing" }))).toBe("VOLUME_NOT_FOUND");
    expect(await codeOf(c.resizeVolume({ name: "missing", sizeBytes: MIB }))).toBe("VOLUME_NOT_FOUND");
    expect(await codeOf(c.createVolume({ name: "UPPER", sizeBytes: MIB }))).toBe("INVALID_ARGUMENT");
    expect(await codeOf(c.createVolume({ name: "b", sizeBytes: 1000 }))).toBe("INVALID_ARGUMENT");
    expect(await codeOf(c.createVolume({ name: "", sizeBytes: MIB }))).toBe("INVALID_ARGUMENT");
    expect(await codeOf(c.resizeVolume({ name: "a", sizeBytes: 4 * MIB }))).toBe("SHRINK_NOT_SUPPORTED");
    const err = await c.getVolume({ name: "missing" }).catch((e: unknown) => e);
    expect(isKeelsonError(err) && err.message).toContain("missing");
    expect(isKeelsonError(err) && (err.cause as { code: number }).code).toBe(5); // grpc NOT_FOUND kept as the cause
  });

  it("an engine that is down gives UNAVAILABLE after bounded retries; an aborted call gives CANCELLED", async () => {
    using dir = tempDir("keelson-sdk-down-");
    const d = await startDaemon({ poolPath: path.join(dir.path, "pool.img"), poolSize: "256M", dir: dir.path });
    const address = d.grpcAddress;
    await d.stop();
    await using c = createClient({ address, defaultTimeoutMs: 3_000, retryBaseDelayMs: 20 });
    const started = Date.now();
    expect(await codeOf(c.listVolumes())).toBe("UNAVAILABLE");
    expect(Date.now() - started).toBeLessThan(10_000);
    const ac = new AbortController();
    ac.abort();
    expect(await codeOf(c.listVolumes({ signal: ac.signal }))).toBe("CANCELLED");
  });

  it("snapshot lifecycle: create, list, get, export read-only, clone, revert, delete, with typed errors", async () => {
    using dir = tempDir("keelson-sdk-snap-");
    await using d = await startDaemon({ poolPath: path.join(dir.path, "pool.img"), poolSize: "512M", dir: dir.path });
    await using c = createClient({ address: d.grpcAddress });
    await c.createVolume({ name: "app", sizeBytes: 16 * MIB });
    const nbd = await NbdTestClient.open(d.nbdAddress, "app");
    expect((await nbd.write(0, Buffer.alloc(2 * MIB, 1))).error).toBe(0);
    const s1 = await c.createSnapshot({ volume: "app", name: "one", labels: { why: "test" } });
    expect(s1).toMatchObject({ name: "one", volume: "app", sizeBytes: 16 * MIB, allocatedBytes: 2 * MIB, parentSnapshot: "" });
    expect(s1.export.nbdTcpUri).toBe(`nbd://${d.nbdAddress}/app%40one`);
    expect((await c.createSnapshot({ volume: "app", name: "one", labels: { why: "test" } })).uid).toBe(s1.uid);
    expect(await codeOf(c.createSnapshot({ volume: "app", name: "one", labels: { why: "other" } }))).toBe("ALREADY_EXISTS");
    expect(await codeOf(c.createSnapshot({ volume: "missing", name: "x" }))).toBe("VOLUME_NOT_FOUND");
    expect(await codeOf(c.createSnapshot({ volume: "app", name: "Bad Name" }))).toBe("INVALID_ARGUMENT");
    expect(await codeOf(c.getSnapshot({ volume: "app", name: "nope" }))).toBe("SNAPSHOT_NOT_FOUND");
    expect(await codeOf(c.deleteSnapshot({ volume: "app", name: "nope" }))).toBe("SNAPSHOT_NOT_FOUND");
    expect((await nbd.write(0, Buffer.alloc(MIB, 2))).error).toBe(0);
    const s2 = await c.createSnapshot({ volume: "app", name: "two" });
    expect(s2.parentSnapshot).toBe("one");
    expect((await c.listSnapshots({ volume: "app" })).map((s) => s.name)).toEqual(["one", "two"]);
    expect((await c.listSnapshots()).length).toBe(2);
    // The snapshot export is read-only (EPERM) and holds the data of its time.
    const ro = await NbdTestClient.open(d.nbdAddress, "app@one");
    expect((await ro.write(0, Buffer.alloc(4096))).error).toBe(1);
    expect((await ro.read(0, MIB)).data.equals(Buffer.alloc(MIB, 1))).toBe(true);
    expect(await codeOf(c.deleteSnapshot({ volume: "app", name: "one" }))).toBe("VOLUME_IN_USE");
    await ro.disconnect();
    // Clones: from a snapshot, from the live volume; smaller than the source is refused.
    expect(
      await codeOf(c.createVolume({ name: "small", sizeBytes: MIB, source: { snapshot: { volume: "app", name: "one" } } })),
    ).toBe("INVALID_ARGUMENT");
    expect(await codeOf(c.createVolume({ name: "x", sizeBytes: 0, source: { snapshot: { volume: "app", name: "zz" } } }))).toBe(
      "SNAPSHOT_NOT_FOUND",
    );
    const c1 = await c.createVolume({ name: "from-one", sizeBytes: 0, source: { snapshot: { volume: "app", name: "one" } } });
    expect(c1.source).toEqual({ snapshot: { volume: "app", name: "one" } });
    const c2 = await c.createVolume({ name: "from-live", sizeBytes: 32 * MIB, source: { volume: "app" } });
    expect(c2).toMatchObject({ sizeBytes: 32 * MIB, source: { volume: "app" } });
    const live = await NbdTestClient.open(d.nbdAddress, "from-live");
    expect((await live.read(0, MIB)).data.equals(Buffer.alloc(MIB, 2))).toBe(true);
    await live.disconnect();
    // Revert needs the volume disconnected; then its data is the snapshot's.
    expect(await codeOf(c.revertVolume({ name: "app", snapshot: "one" }))).toBe("VOLUME_IN_USE");
    await nbd.disconnect();
    expect(await codeOf(c.revertVolume({ name: "app", snapshot: "nope" }))).toBe("SNAPSHOT_NOT_FOUND");
    await c.revertVolume({ name: "app", snapshot: "one" });
    const after = await NbdTestClient.open(d.nbdAddress, "app");
    expect((await after.read(0, MIB)).data.equals(Buffer.alloc(MIB, 1))).toBe(true);
    await after.disconnect();
    // Snapshots outlive their volume.
    await c.deleteVolume({ name: "app" });
    expect((await c.getSnapshot({ volume: "app", name: "two" })).name).toBe("two");
    // A new volume under the old name cannot take over the old volume's snapshot names or revert to them.
    await c.createVolume({ name: "app", sizeBytes: 16 * MIB });
    expect(await codeOf(c.createSnapshot({ volume: "app", name: "two" }))).toBe("ALREADY_EXISTS");
    expect(await codeOf(c.revertVolume({ name: "app", snapshot: "two" }))).toBe("INVALID_ARGUMENT");
    const old = await NbdTestClient.open(d.nbdAddress, "app@two");
    expect((await old.read(0, MIB)).data.equals(Buffer.alloc(MIB, 2))).toBe(true);
    await old.disconnect();
    await c.deleteSnapshot({ volume: "app", name: "two" });
    await c.deleteSnapshot({ volume: "app", name: "one" });
    expect((await c.getNode()).pool.snapshotCount).toBe(0);
  });

  it("helpers: snapshotThenClone gives a writable copy of that moment (idempotent); cluster-only calls on a single engine are refused with INVALID_ARGUMENT", async () => {
    using dir = tempDir("keelson-sdk-help-");
    await using d = await startDaemon({ poolPath: path.join(dir.path, "pool.img"), poolSize: "256M", dir: dir.path });
    await using c = createClient({ address: d.grpcAddress });
    await c.createVolume({ name: "prod", sizeBytes: 8 * MIB });
    const nbd = await NbdTestClient.open(d.nbdAddress, "prod");
    expect((await nbd.write(0, Buffer.alloc(MIB, 7))).error).toBe(0);
    const { snapshot, clone } = await c.snapshotThenClone({ volume: "prod", snapshot: "for-ci", clone: "ci-copy" });
    expect(snapshot).toMatchObject({ volume: "prod", name: "for-ci", holders: [] });
    expect(clone).toMatchObject({
      name: "ci-copy",
      sizeBytes: 8 * MIB,
      source: { snapshot: { volume: "prod", name: "for-ci" } },
    });
    expect((await nbd.write(0, Buffer.alloc(MIB, 8))).error).toBe(0); // later writes stay out of the copy
    await nbd.disconnect();
    const again = await c.snapshotThenClone({ volume: "prod", snapshot: "for-ci", clone: "ci-copy" });
    expect(again.clone.uid).toBe(clone.uid);
    const copy = await NbdTestClient.open(d.nbdAddress, "ci-copy");
    expect((await copy.read(0, MIB)).data.equals(Buffer.alloc(MIB, 7))).toBe(true);
    expect((await copy.write(0, Buffer.alloc(4096, 9))).error).toBe(0);
    await copy.disconnect();
    expect(await codeOf(c.snapshotThenClone({ volume: "nope", snapshot: "s", clone: "c" }))).toBe("VOLUME_NOT_FOUND");
    // Attachments, replication and events need a cluster.
    expect(await codeOf(c.createAndAttach({ name: "r", sizeBytes: 8 * MIB, replicas: 2 }))).toBe("INVALID_ARGUMENT");
    // A cluster volume with one replica too, and nothing is made on this pool instead.
    const one = await c.createVolume({ name: "r1", sizeBytes: 8 * MIB, replicas: 1, replicated: true }).catch((e: unknown) => e);
    expect(one).toMatchObject({ code: "INVALID_ARGUMENT", message: expect.stringContaining("replicated: true") });
    expect(await codeOf(c.getVolume({ name: "r1" }))).toBe("VOLUME_NOT_FOUND");
    expect((await c.getVolume({ name: "prod" })).replicated, "a volume of this pool is no cluster volume").toBe(false);
    expect(await codeOf(c.attachVolume({ name: "prod" }))).toBe("INVALID_ARGUMENT");
    expect(await codeOf(c.detachVolume({ name: "prod" }))).toBe("INVALID_ARGUMENT");
    expect(await codeOf(c.listAttachments({ name: "prod" }))).toBe("INVALID_ARGUMENT");
    expect(await codeOf(c.waitFor("prod", "healthy", { timeoutMs: 500 }))).toBe("VOLUME_NOT_FOUND");
    const watch = c.watch()[Symbol.asyncIterator]();
    expect(await codeOf(watch.next())).toBe("INVALID_ARGUMENT");
  });
});
