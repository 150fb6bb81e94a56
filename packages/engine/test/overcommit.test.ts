import fs from "node:fs";
import path from "node:path";
import { createClient, isKeelsonError } from "@keelson/sdk";
import { describe, expect, it } from "vitest";
import { startDaemon, tempDir } from "./helpers/daemon.js";
import { run } from "./helpers/process.js";

const MIB = 1024 * 1024;
const KEELSOND = path.resolve(path.dirname(new URL(import.meta.url).pathname), "../dist/cli/keelsond.js");

async function refusal(p: Promise<unknown>): Promise<unknown> {
  return p.then(
    () => {
      throw new Error("the engine did not refuse");
    },
    (error: unknown) => error,
  );
}

describe("keelsond --overcommit-percent", () => {
  it("over-commit limit: GetNode reports it; a create or resize past it is LIMIT_EXCEEDED with the figures; nothing is created", async () => {
    using dir = tempDir("keelson-overcommit-");
    await using d = await startDaemon({ poolPath: path.join(dir.path, "pool.img"), poolSize: "64M", dir: dir.path });
    await using c = createClient({ address: d.grpcAddress });
    const pool = (await c.getNode()).pool;
    expect(pool).toMatchObject({ overcommitPercent: 200, provisionedBytes: 0, provisionLimitBytes: 2 * pool.totalBytes });
    await c.createVolume({ name: "a", sizeBytes: pool.totalBytes });
    const tooBig = await refusal(c.createVolume({ name: "b", sizeBytes: pool.totalBytes + MIB }));
    expect(isKeelsonError(tooBig, "LIMIT_EXCEEDED")).toBe(true);
    for (const figure of [
      `${pool.totalBytes} bytes) data capacity`,
      "200%",
      `${pool.totalBytes + MIB} bytes`,
      `(${pool.totalBytes} bytes) provisioned`,
    ])
      expect((tooBig as Error).message).toContain(figure);
    expect((await c.listVolumes()).map((v) => v.name)).toEqual(["a"]);
    const grow = await refusal(c.resizeVolume({ name: "a", sizeBytes: 2 * pool.totalBytes + MIB }));
    expect(isKeelsonError(grow, "LIMIT_EXCEEDED")).toBe(true);
    expect((await c.getVolume({ name: "a" })).sizeBytes).toBe(pool.totalBytes);
    await c.createVolume({ name: "b", sizeBytes: pool.totalBytes });
    expect((await c.getNode()).pool.provisionedBytes).toBe(2 * pool.totalBytes);
  });

  it("a higher limit lets the same pool promise more, and GetNode says so", async () => {
    using dir = tempDir("keelson-overcommit-300-");
    const poolPath = path.join(dir.path, "pool.img");
    await using d = await startDaemon({ poolPath, poolSize: "64M", dir: dir.path, extraArgs: ["--overcommit-percent", "300"] });
    await using c = createClient({ address: d.grpcAddress });
    const pool = (await c.getNode()).pool;
    expect(pool.overcommitPercent).toBe(300);
    expect(pool.provisionLimitBytes).toBe(3 * pool.totalBytes);
    await c.createVolume({ name: "big", sizeBytes: 3 * pool.totalBytes });
  });

  it("a malformed --overcommit-percent is a usage error (exit 2, the valid range named), and no pool is created", async () => {
    using dir = tempDir("keelson-overcommit-bad-");
    for (const bad of ["99", "150.5", "2e2", "lots", "-300"]) {
      const poolPath = path.join(dir.path, "bad.img");
      const r = await run(
        process.execPath,
        [
          KEELSOND,
          "--pool",
          poolPath,
          "--pool-size",
          "64M",
          "--grpc-listen",
          "127.0.0.1:0",
          "--nbd-listen",
          "",
          `--overcommit-percent=${bad}`,
        ],
        { allowFail: true, timeoutMs: 20_000 },
      );
      expect({ bad, code: r.code }).toEqual({ bad, code: 2 });
      expect(r.stderr).toContain("an integer percent from 100");
      expect(r.stderr).toContain("usage: keelsond");
      expect(fs.existsSync(poolPath)).toBe(false);
    }
  }, 60_000);
});
