import fs from "node:fs";
import os from "node:os";
import path from "node:path";
import { isKeelsonError } from "@keelson/sdk";
import { describe, expect, it } from "vitest";
import { LocalCluster } from "../../src/local-cluster/local-cluster.js";
import { trackClusters } from "../helpers/clusters.js";
import { canRun } from "../helpers/env.js";
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
  it("each node gets a disk of --disk-size; placement leaves out nodes whose pool cannot promise the size under their limit (LIMIT_EXCEEDED, each node's reason), and takes a size that fits", async (t) => {
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
