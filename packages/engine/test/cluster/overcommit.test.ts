import fs from "node:fs";
import os from "node:os";
import path from "node:path";
import { isKeelsonError, type PoolSpaceAlertEvent } from "@keelson/sdk";
import { describe, expect, it } from "vitest";
import { LocalCluster } from "../../src/local-cluster/local-cluster.js";
import { trackClusters } from "../helpers/clusters.js";
import { canRun } from "../helpers/env.js";
import { NbdTestClient } from "../helpers/nbd-client.js";
import { run } from "../helpers/process.js";

const MIB = 1024 * 1024;
const KEELSON = path.resolve(path.dirname(new URL(import.meta.url).pathname), "../../dist/cli/keelson.js");

const track = trackClusters();

async function refusal(p: Promise<unknown>): Promise<unknown> {
  return p.then(
    () => {
      throw new Error("the cluster did not refuse");
    },
    (error: unknown) => error,
  );
}

describe("keelson up --disk-size and the over-commit limit in a cluster", () => {
  it("each node gets a disk of --disk-size; placement leaves out nodes whose pool cannot promise the size under their limit (LIMIT_EXCEEDED, each node's reason), and takes a size that fits; filling the pools raises each node's 80% space alert as a watch event", async (t) => {
    if (!canRun({ root: true, tools: ["etcd", "ip", "losetup"] }, t.task.name)) return t.skip();
    const dir = path.join(os.tmpdir(), `keelson-up-disk-${process.pid}-${Date.now()}`);
    await run(
      process.execPath,
      [KEELSON, "up", "--nodes", "2", "--dir", dir, "--disk-size", "192M", "--overcommit-percent", "150"],
      {
        timeoutMs: 90_000,
      },
    );
    const cluster = track(LocalCluster.fromDir(dir));
    const [c1, c2] = [cluster.client(0), cluster.client(1)];
    const pools = [(await c1.getNode()).pool, (await c2.getNode()).pool];
    for (const pool of pools) {
      // The disk is 192 MiB; the pool's data capacity is that less its metadata.
      expect(pool.totalBytes).toBeGreaterThan(128 * MIB);
      expect(pool.totalBytes).toBeLessThanOrEqual(192 * MIB);
      expect(pool.overcommitPercent).toBe(150);
      expect(pool.provisionLimitBytes).toBe(Math.floor((pool.totalBytes * 150) / 100));
    }
    // The disk reports in etcd (ListNodes, `keelson cluster nodes`) carry the limit too.
    const reported = (await c1.listNodes()).map((n) => [n.nodeId, n.disk?.overcommitPercent, n.disk?.provisionLimitBytes]);
    expect(reported).toEqual(pools.map((p, i) => [`node${i + 1}`, 150, p.provisionLimitBytes]));
    const limit = Math.min(...pools.map((p) => p.provisionLimitBytes));
    const tooBig = limit - (limit % MIB) + MIB;
    const e = await refusal(c1.createVolume({ name: "big", sizeBytes: tooBig, replicas: 2 }));
    expect(isKeelsonError(e, "LIMIT_EXCEEDED")).toBe(true);
    for (const node of ["node1", "node2"])
      expect((e as Error).message).toMatch(new RegExp(`${node}: over-commit limit: 0 B provisioned`));
    // Nothing was created on either node.
    expect((await c1.listVolumes()).length + (await c2.listVolumes()).length).toBe(0);
    const fits = limit - (limit % MIB);
    await c1.createVolume({ name: "fits", sizeBytes: fits, replicas: 2 });
    expect((await c2.getNode()).pool.provisionedBytes).toBe(fits);
    // The nodes are full of promises now: even a small volume has nowhere to go.
    const small = await refusal(c2.createVolume({ name: "small", sizeBytes: 16 * MIB, replicas: 1 }));
    expect(isKeelsonError(small, "LIMIT_EXCEEDED") && small.message).toContain("over-commit limit");

    // Writing 80% of a pool through the replicated volume fills both nodes' pools: each raises its 80% alert, once, as an event.
    const ac = new AbortController();
    const alerts: PoolSpaceAlertEvent[] = [];
    const watching = (async () => {
      for await (const e of c2.watch({ signal: ac.signal })) if (e.kind === "spaceAlert") alerts.push(e);
    })().catch(() => undefined);
    await c1.attachVolume({ name: "fits" });
    const nbd = await NbdTestClient.open(cluster.nodes[0]?.nbdAddress as string, "fits");
    const extent = pools[0]?.extentSizeBytes as number;
    const extents = Math.ceil((Math.max(...pools.map((p) => p.totalBytes)) * 0.8) / extent);
    // Whole extents: a smaller write takes only its blocks (sub-extent allocation).
    const whole = Buffer.alloc(extent, 7);
    for (let i = 0; i < extents; i++) expect((await nbd.write(i * extent, whole)).error).toBe(0);
    expect((await nbd.flush()).error).toBe(0);
    const deadline = Date.now() + 30_000;
    while (alerts.filter((a) => a.thresholdPercent === 80).length < 2 && Date.now() < deadline)
      await new Promise((r) => setTimeout(r, 100));
    ac.abort();
    await watching;
    const raised = alerts.filter((a) => a.thresholdPercent === 80).map((a) => `${a.nodeId} ${a.state}`);
    expect(raised.sort()).toEqual(["node1 raised", "node2 raised"]);
    const a = alerts[0] as PoolSpaceAlertEvent;
    expect(a.usedBytes * 100).toBeGreaterThanOrEqual(80 * a.totalBytes);
    await nbd.disconnect();
  }, 180_000);

  it("keelson up refuses a bad --disk-size or --overcommit-percent before starting anything", async () => {
    const dir = path.join(os.tmpdir(), `keelson-up-bad-${process.pid}-${Date.now()}`);
    for (const [flag, value, says] of [
      ["--disk-size", "10M", "invalid --disk-size"],
      ["--disk-size", "17T", "from 64.0 MiB to 16.0 TiB"],
      ["--disk-size", "100000001", "a multiple of 4 KiB"],
      ["--disk-size", "lots", "invalid size"],
      ["--overcommit-percent", "50", "an integer percent from 100"],
    ] as const) {
      const r = await run(process.execPath, [KEELSON, "up", "--nodes", "1", "--dir", dir, flag, value], {
        allowFail: true,
        timeoutMs: 30_000,
      });
      expect({ flag, value, code: r.code }).toEqual({ flag, value, code: 1 });
      expect(r.stderr).toContain(says);
      expect(fs.existsSync(path.join(dir, "cluster.json"))).toBe(false);
    }
    fs.rmSync(dir, { recursive: true, force: true });
  }, 120_000);
});
