import os from "node:os";
import path from "node:path";
import { createClient, type KeelsonEvent } from "@keelson/sdk";
import { describe, expect, it } from "vitest";
import { LocalCluster } from "../../src/local-cluster/local-cluster.js";
import { trackClusters } from "../helpers/clusters.js";
import { canRun } from "../helpers/env.js";
import { run } from "../helpers/process.js";

const MIB = 1024 * 1024;
const track = trackClusters();

/** Collects a watch's events until aborted. */
function collect(iterable: AsyncIterable<KeelsonEvent>) {
  const events: KeelsonEvent[] = [];
  let error: unknown = null;
  const done = (async () => {
    try {
      for await (const e of iterable) events.push(e);
    } catch (e) {
      error = e;
    }
  })();
  return { events, done, error: () => error };
}

const key = (e: KeelsonEvent) => `${e.cursor.revision}.${e.cursor.index}`;

/** A readable line per event, without cursors and times (for comparing two watches and finding milestones). */
function describeEvent(e: KeelsonEvent): string {
  switch (e.kind) {
    case "volume":
      return `volume ${e.volume} ${e.deleted ? "deleted" : `in-sync=${e.inSync.join(",")}`}`;
    case "attachments":
      return `attachments ${e.volume} [${e.attachments.map((a) => `${a.nodeId}${a.readOnly ? ":ro" : ""}@${a.epoch}`).join(" ")}]`;
    case "snapshot":
      return `snapshot ${e.volume}@${e.name} ${e.deleted ? "deleted" : `on ${e.holders.length}`}`;
    case "node":
      return `node ${e.nodeId} ${e.state ?? ""}${e.alive === undefined ? "" : e.alive ? " alive" : " lost"}`;
    case "status":
      return `status ${e.volume} ${e.state} on ${e.nodeId}@${e.epoch}`;
    case "spaceAlert":
      return `space ${e.nodeId} ${e.thresholdPercent}% ${e.state}`;
  }
}

async function until(ok: () => boolean, what: string, ms = 30_000): Promise<void> {
  const deadline = Date.now() + ms;
  while (!ok()) {
    if (Date.now() > deadline) throw new Error(`timed out waiting for ${what}`);
    await new Promise((r) => setTimeout(r, 50));
  }
}

describe("watch", () => {
  it("the engine serving a watch is killed -9 and restarted mid-stream: the SDK iterator reconnects and yields every event exactly once, the same sequence as a watch that never broke; a cursor etcd compacted away gets WATCH_COMPACTED", async (t) => {
    if (!canRun({ root: true, tools: ["etcd", "etcdctl", "ip", "losetup"] }, t.task.name)) return t.skip();
    const dir = path.join(os.tmpdir(), `keelson-watch-${process.pid}-${Date.now()}`);
    const cluster = track(await LocalCluster.start({ nodes: 3, dir, diskSizeBytes: 256 * MIB, leaseTtlS: 2 }));
    const [c1, c2] = [cluster.client(0), cluster.client(1)];
    const ac = new AbortController();
    // The watch under test goes to node3, which is killed; the reference watch to node2 never breaks.
    const watcherClient = createClient({ address: cluster.nodes[2]?.grpcAddress as string, retryBaseDelayMs: 50 });
    const referenceClient = createClient({ address: cluster.nodes[1]?.grpcAddress as string });
    const start = await (async () => {
      // Both start after the same point: the marker's creation, found in the cluster's history. A
      // watch opened "from now" is live only some time after the call, so it could miss the marker.
      await c1.createVolume({ name: "marker", sizeBytes: 16 * MIB, replicas: 2 });
      const history = referenceClient.watch({ volume: "marker", after: { revision: 1, index: 0 }, signal: ac.signal });
      for await (const e of history) if (e.kind === "volume") return e.cursor;
      throw new Error("the reference watch ended before the marker's creation");
    })();
    const watched = collect(watcherClient.watch({ after: start, signal: ac.signal }));
    const reference = collect(referenceClient.watch({ after: start, signal: ac.signal }));

    await c1.createVolume({ name: "db", sizeBytes: 32 * MIB, replicas: 3 });
    await c1.attachVolume({ name: "db" });
    await c1.createSnapshot({ volume: "db", name: "s1" });
    await until(() => watched.events.some((e) => e.kind === "snapshot" && e.name === "s1"), "s1 on the watch");

    // The watch's engine dies; changes go on meanwhile; it comes back at the same address.
    await cluster.kill9(2);
    await c2.createSnapshot({ volume: "db", name: "s2" });
    await c1.detachVolume({ name: "db" });
    await c2.attachVolume({ name: "db", nodeId: "node2", readOnly: true });
    await new Promise((r) => setTimeout(r, 500));
    await cluster.startNode(2);
    // node3 may not answer for a moment after its restart: the delete is retried until every holder dropped s1.
    let deleted = false;
    await deleteS1();
    expect(deleted, "s1 deleted on every holder").toBe(true);
    async function deleteS1(): Promise<void> {
      for (let i = 0; i < 100 && !deleted; i++) {
        deleted = await c2.deleteSnapshot({ volume: "db", name: "s1" }).then(
          () => true,
          () => false,
        );
        if (!deleted) await new Promise((r) => setTimeout(r, 200));
      }
    }
    await until(
      () => reference.events.some((e) => e.kind === "node" && e.nodeId === "node3" && e.alive === true),
      "node3 alive again on the reference watch",
    );
    await c1.createSnapshot({ volume: "marker", name: "end" });
    await until(() => watched.events.some((e) => e.kind === "snapshot" && e.name === "end"), "the end marker on the watch");
    await until(() => reference.events.some((e) => e.kind === "snapshot" && e.name === "end"), "the end marker on the reference");
    ac.abort();
    await Promise.all([watched.done, reference.done]);
    watcherClient.close();
    referenceClient.close();
    expect(watched.error()).toBeNull();
    expect(reference.error()).toBeNull();

    // Exactly once: no cursor twice, in order, and the same events as the watch that never broke.
    const keys = watched.events.map(key);
    expect(new Set(keys).size).toBe(keys.length);
    const order = watched.events.map((e) => e.cursor.revision * 2 ** 20 + e.cursor.index);
    expect(order).toEqual([...order].sort((a, b) => a - b));
    const upToEnd = (events: KeelsonEvent[]) =>
      events.slice(0, events.findIndex((e) => e.kind === "snapshot" && e.name === "end") + 1);
    expect(upToEnd(watched.events).map(key)).toEqual(upToEnd(reference.events).map(key));
    const lines = upToEnd(watched.events).map(describeEvent);
    console.log(`watch across a kill -9 of its engine: ${lines.length} events, none lost or repeated:\n  ${lines.join("\n  ")}`);

    // Once etcd compacted its history past a cursor, resuming there says so (no silent gap).
    const last = (reference.events.at(-1) as KeelsonEvent).cursor.revision;
    await run("etcdctl", ["--endpoints", cluster.etcdEndpoint, "compact", String(last)]);
    const late = createClient({ address: cluster.nodes[0]?.grpcAddress as string });
    const resumed = late.watch({ after: start })[Symbol.asyncIterator]();
    expect(
      await resumed.next().then(
        () => "yielded",
        (e: { code?: string }) => e.code,
      ),
    ).toBe("WATCH_COMPACTED");
    late.close();
    // What happened while the watch's engine was down is there.
    for (const expected of [
      "volume db in-sync=node1,node2,node3",
      "attachments db [node1@1]",
      "snapshot db@s1 on 3",
      "snapshot db@s2 on 2", // node3 was down: node1 and node2 hold it
      "attachments db []",
      "status db detached on node1@1",
      "volume db in-sync=node1,node2", // node3 missed the detach's flush
      "node node3 up", // re-registered on restart (back within its old lease's TTL: no "lost" in between)
      "node node3  alive",
      "snapshot db@s1 deleted",
    ]) {
      expect(lines, `watch saw "${expected}"`).toContain(expected);
    }
    // The reader attaches at the current epoch: 1, or 2 when the leader's repair of node3 (which
    // missed the detach) took one first.
    expect(
      lines.some((l) => /^attachments db \[node2:ro@[12]\]$/.test(l)),
      "watch saw the read-only attachment",
    ).toBe(true);
  }, 120_000);
});
