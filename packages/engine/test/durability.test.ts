import path from "node:path";
import { describe, expect, it } from "vitest";
import { seededRandom, testSeed } from "../src/testing/random.js";
import { Cleanup } from "./helpers/cleanup.js";
import { startDaemon, tempDir } from "./helpers/daemon.js";
import { BLOCK, blockStamp, blockStampOf, flushWorkload } from "./helpers/flush-workload.js";
import { NbdTestClient } from "./helpers/nbd-client.js";

const MIB = 1024 * 1024;

describe("durability", () => {
  it("kill -9 mid-workload: every write acknowledged before the last acknowledged FLUSH reads back exactly", async () => {
    const seed = testSeed();
    console.log(`durability seed=${seed} (rerun with KEELSON_SEED=${seed})`);
    const rand = seededRandom(seed);
    using dir = tempDir("keelson-kill9-");
    const poolPath = path.join(dir.path, "pool.img");
    const blocks = (64 * MIB) / BLOCK;
    await using cleanup = new Cleanup();
    let d = await startDaemon({ poolPath, poolSize: "512M", dir: dir.path });
    // Whichever daemon runs when the test ends, also when it fails.
    cleanup.add("keelsond", () => d.stop());
    await d.client().createVolume({ name: "crash", sizeBytes: blocks * BLOCK });
    const client = await NbdTestClient.open(d.nbdAddress, "crash");

    const load = flushWorkload(client, { blocks, random: rand });
    await new Promise((r) => setTimeout(r, 1500));
    await d.kill9();
    await load.stop();
    client.close();

    d = await startDaemon({ poolPath, dir: dir.path });
    try {
      const reader = await NbdTestClient.open(d.nbdAddress, "crash");
      const { checked, exact } = await load.verify(reader, seed);
      console.log(
        `kill -9: ${load.summary().writes} writes sent, ${checked} blocks had a durable write, ${exact} hold exactly it`,
      );
      expect(checked).toBeGreaterThan(100);
      await reader.disconnect();
    } finally {
      await d.stop();
    }
  });

  it("restart (clean and kill -9) keeps every volume and its data; deleting a volume returns its space", async () => {
    using dir = tempDir("keelson-restart-");
    const poolPath = path.join(dir.path, "pool.img");
    await using cleanup = new Cleanup();
    let d = await startDaemon({ poolPath, poolSize: "512M", dir: dir.path });
    // Whichever daemon runs when the test ends, also when it fails (a failed expect leaked it before).
    cleanup.add("keelsond", () => d.stop());
    const free0 = (await d.client().getNode()).pool.freeBytes;
    const sizes: Record<string, number> = { a: 16 * MIB, b: 40 * MIB, c: 8 * MIB };
    for (const [name, sizeBytes] of Object.entries(sizes))
      await d.client().createVolume({ name, sizeBytes, labels: { t: name } });
    const c1 = await NbdTestClient.open(d.nbdAddress, "b");
    for (let i = 0; i < 10; i++) expect((await c1.write(i * 3 * MIB, blockStamp(1000 + i))).error).toBe(0);
    expect((await c1.flush()).error).toBe(0);
    await c1.disconnect();

    for (const restart of ["clean", "kill9"] as const) {
      if (restart === "clean") await d.stop();
      else await d.kill9();
      d = await startDaemon({ poolPath, dir: dir.path });
      const vols = await d.client().listVolumes();
      expect(Object.fromEntries(vols.map((v) => [v.name, v.sizeBytes]))).toEqual(sizes);
      expect(vols.find((v) => v.name === "a")?.labels).toEqual({ t: "a" });
      const c2 = await NbdTestClient.open(d.nbdAddress, "b");
      for (let i = 0; i < 10; i++) expect(blockStampOf((await c2.read(i * 3 * MIB, BLOCK)).data)).toBe(1000 + i);
      await c2.disconnect();
    }
    const node = await d.client().getNode();
    // Ten 4 KiB writes took ten blocks (sub-extent allocation), not ten extents.
    expect(node.pool.freeBytes).toBe(free0 - 10 * BLOCK);
    const { freedBytes } = await d.client().deleteVolume({ name: "b" });
    expect(freedBytes).toBe(10 * BLOCK);
    await d.kill9();
    d = await startDaemon({ poolPath, dir: dir.path });
    expect((await d.client().getNode()).pool.freeBytes).toBe(free0);
    expect((await d.client().listVolumes()).map((v) => v.name)).toEqual(["a", "c"]);
    await d.stop();
  });
});
