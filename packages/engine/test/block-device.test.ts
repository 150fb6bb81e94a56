import crypto from "node:crypto";
import fs from "node:fs";
import path from "node:path";
import { describe, expect, it } from "vitest";
import { attachLoop, mount, nbdBlockDevice } from "./helpers/block-device.js";
import { Cleanup } from "./helpers/cleanup.js";
import { startDaemon, tempDir } from "./helpers/daemon.js";
import { canRun } from "./helpers/env.js";
import { run } from "./helpers/process.js";

const MIB = 1024 * 1024;

describe("keelson volumes as real block devices (root)", () => {
  it("pool on a loop device; a volume formatted ext4 and mounted through nbdfuse + loop keeps its files across a daemon restart", async (t) => {
    if (!canRun({ root: true, tools: ["losetup", "nbdfuse", "mkfs.ext4", "fusermount3"] }, t.task.name)) return t.skip();
    using dir = tempDir("keelson-blk-");
    const backing = path.join(dir.path, "disk.img");
    fs.closeSync(fs.openSync(backing, "w"));
    fs.truncateSync(backing, 1024 * MIB);
    const payload = crypto.randomBytes(20 * MIB);
    {
      await using cleanup = new Cleanup();
      const disk = await attachLoop(backing, cleanup);
      const d = await startDaemon({ poolPath: disk, dir: dir.path });
      cleanup.add("stop daemon", () => d.stop());
      await d.client().createVolume({ name: "fs", sizeBytes: 256 * MIB });
      {
        await using inner = new Cleanup();
        const dev = await nbdBlockDevice(d.uri("fs"), dir.path, inner);
        await run("mkfs.ext4", ["-q", dev]);
        const mnt = await mount(dev, dir.path, inner);
        fs.writeFileSync(path.join(mnt, "data.bin"), payload);
        await run("sync", []);
      }
      await d.stop();
      // Restart on the same loop device: the pool, the volume and the filesystem are all still there.
      const d2 = await startDaemon({ poolPath: disk, dir: dir.path });
      cleanup.add("stop daemon 2", () => d2.stop());
      const vol = await d2.client().getVolume({ name: "fs" });
      expect(vol.allocatedBytes).toBeGreaterThanOrEqual(20 * MIB);
      await using inner = new Cleanup();
      const dev = await nbdBlockDevice(d2.uri("fs"), dir.path, inner);
      await run("fsck.ext4", ["-n", "-f", dev]);
      const mnt = await mount(dev, dir.path, inner);
      expect(fs.readFileSync(path.join(mnt, "data.bin")).equals(payload)).toBe(true);
    }
  });
});
