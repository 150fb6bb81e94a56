import { describe, expect, it } from "vitest";
import { testSeed } from "../src/testing/random.js";
import { runStoreModel } from "../src/testing/store-model.js";
import { tempDir } from "./helpers/daemon.js";
import { DaemonTarget, MODEL_EXTENT_BYTES as EXTENT } from "./helpers/daemon-target.js";

describe("snapshot model against the real daemon", () => {
  it("random snapshots, clones, reverts, deletes, expansions, I/O and kill -9 restarts: volumes and snapshots equal the model after every step", async () => {
    const seed = testSeed();
    const steps = Number(process.env.KEELSON_MODEL_STEPS ?? 2000);
    console.log(
      `snapshot model (daemon) seed=${seed} steps=${steps} (rerun: KEELSON_SEED=${seed} npx vitest run test/snapshot-model)`,
    );
    using dir = tempDir("keelson-model-");
    const target = await DaemonTarget.start(dir.path);
    try {
      const report = await runStoreModel(target, { seed, steps, extentSizeBytes: EXTENT });
      console.log(`snapshot model (daemon) report ${JSON.stringify(report)}`);
      expect(report.kill9).toBeGreaterThan(0);
      expect(report.deleteSnapshot).toBeGreaterThan(0);
      // Space comes back: with every snapshot and volume deleted the pool is empty again.
      for (const s of await target.client.listSnapshots()) {
        await target.client.deleteSnapshot({ volume: s.volume, name: s.name }).catch(async () => {
          await target.restart(false);
          await target.client.deleteSnapshot({ volume: s.volume, name: s.name });
        });
      }
      await target.restart(false);
      for (const v of await target.client.listVolumes()) await target.client.deleteVolume({ name: v.name });
      await target.restart(false);
      const { pool } = await target.client.getNode();
      expect(pool.allocatedBytes).toBe(0);
      expect(pool.freeBytes).toBe(pool.totalBytes);
      expect(pool.snapshotCount).toBe(0);
    } finally {
      await target.close();
    }
  }, 600_000);
});
