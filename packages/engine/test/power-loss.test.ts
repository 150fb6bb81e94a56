import path from "node:path";
import { describe, expect, it } from "vitest";
import { seededRandom, testSeed } from "../src/testing/random.js";
import { runStoreModel } from "../src/testing/store-model.js";
import { SECTOR_BYTES } from "../src/testing/volatile-cache.js";
import { Cleanup } from "./helpers/cleanup.js";
import { startDaemon, type TestDaemon, tempDir } from "./helpers/daemon.js";
import { DaemonTarget, MODEL_EXTENT_BYTES } from "./helpers/daemon-target.js";
import { canRun } from "./helpers/env.js";
import { BLOCK, flushWorkload } from "./helpers/flush-workload.js";
import { NbdTestClient } from "./helpers/nbd-client.js";
import { attachVolatileDisk, type VolatileBlockDevice } from "./helpers/volatile-block-device.js";

const MIB = 1024 * 1024;
const TOOLS = ["nbdfuse", "fusermount3", "losetup"];
/** A small random delay per disk request, so writes sit in the disk's volatile cache for a while before their flush. */
const JITTER = { kind: "slow", minMs: 0, maxMs: 2 } as const;

describe("power loss", () => {
  it("power cut of the pool's disk mid-workload (unflushed writes dropped or torn), then kill -9: every write acknowledged before the last acknowledged FLUSH reads back exactly and the pool's journal recovers", async (t) => {
    if (!canRun({ root: true, tools: TOOLS }, t.task.name)) return t.skip();
    const seed = testSeed();
    console.log(`power-cut durability seed=${seed} (rerun with KEELSON_SEED=${seed})`);
    const rand = seededRandom(seed);
    using dir = tempDir("keelson-power-");
    await using cleanup = new Cleanup();
    const medium = { backingFile: path.join(dir.path, "disk.img"), sizeBytes: 512 * MIB, dir: dir.path, random: rand };
    let dev: VolatileBlockDevice = await attachVolatileDisk({ ...medium, latency: JITTER });
    cleanup.add("volatile disk", () => dev.detach());
    let d: TestDaemon = await startDaemon({ poolPath: dev.loopDevice, dir: dir.path });
    cleanup.add("keelsond", () => d.stop());
    const blocks = (64 * MIB) / BLOCK;
    await d.client().createVolume({ name: "crash", sizeBytes: blocks * BLOCK });
    const client = await NbdTestClient.open(d.nbdAddress, "crash");
    // Four writers, not sixteen: through the page cache, nbdfuse and the loop device a FLUSH takes as long as
    // writing back everything dirty, and with sixteen writers few FLUSHes finish before the cut.
    const load = flushWorkload(client, { blocks, random: rand, writers: 4 });
    await new Promise((r) => setTimeout(r, 2500 + rand() * 500));

    console.log(`at the cut: ${JSON.stringify(load.summary())}`);
    const cut = await dev.powerCut();
    const seen = { ...dev.disk.stats };
    await d.kill9();
    await load.stop();
    client.close();
    await dev.detach();
    console.log(`power cut: disk saw ${seen.writes} writes, ${seen.flushes} flushes; at the cut ${JSON.stringify(cut)}`);
    expect(seen.flushes, "the daemon's fdatasync reaches the disk as FLUSH").toBeGreaterThan(0);

    dev = await attachVolatileDisk(medium);
    const restartedAt = Date.now();
    d = await startDaemon({ poolPath: dev.loopDevice, dir: dir.path });
    const recoveryMs = Date.now() - restartedAt;
    const reader = await NbdTestClient.open(d.nbdAddress, "crash");
    const { checked, exact, torn } = await load.verify(reader, seed, { tornSectorBytes: SECTOR_BYTES });
    await reader.disconnect();
    const { writes, flushes } = load.summary();
    console.log(
      `power cut: ${writes} writes sent, ${flushes} FLUSHes acknowledged; ${checked} blocks had a durable write, ${exact} hold exactly it, ${torn} torn by later unflushed writes; pool reopened in ${recoveryMs} ms`,
    );
    expect(checked).toBeGreaterThan(100);
  });

  it("snapshot model with power cuts of the pool's disk instead of kill -9: volumes and snapshots equal the model after every step", async (t) => {
    if (!canRun({ root: true, tools: TOOLS }, t.task.name)) return t.skip();
    const seed = testSeed();
    const steps = Number(process.env.KEELSON_POWER_MODEL_STEPS ?? 300);
    console.log(
      `snapshot model (power cuts) seed=${seed} steps=${steps} (rerun: KEELSON_SEED=${seed} npx vitest run test/power-loss)`,
    );
    const rand = seededRandom(seed ^ 0x5eed);
    using dir = tempDir("keelson-power-model-");
    await using cleanup = new Cleanup();
    const medium = { backingFile: path.join(dir.path, "disk.img"), sizeBytes: 96 * MIB, dir: dir.path, random: rand };
    let dev: VolatileBlockDevice = await attachVolatileDisk({ ...medium, latency: JITTER });
    cleanup.add("volatile disk", () => dev.detach());
    const cuts: string[] = [];
    const target = await DaemonTarget.start(dir.path, {
      poolPath: dev.loopDevice,
      crashHooks: {
        crash: async () => {
          const r = await dev.powerCut();
          cuts.push(`${r.cachedLines}:${r.persistedLines}/${r.tornLines}/${r.droppedLines}`);
        },
        recover: async () => {
          await dev.detach();
          dev = await attachVolatileDisk({ ...medium, latency: JITTER });
          return dev.loopDevice;
        },
      },
    });
    cleanup.add("keelsond", () => target.close());
    const report = await runStoreModel(target, {
      seed,
      steps,
      extentSizeBytes: MODEL_EXTENT_BYTES,
      crashTearsSectorBytes: SECTOR_BYTES,
    });
    console.log(
      `snapshot model (power cuts) report ${JSON.stringify(report)}; cuts (cached lines: persisted/torn/dropped) ${cuts.join(" ")}`,
    );
    expect(report.kill9).toBeGreaterThan(0);
  }, 300_000);
});
