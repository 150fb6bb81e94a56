import os from "node:os";
import path from "node:path";
import { isKeelsonError } from "@keelson/sdk";
import { describe, expect, it } from "vitest";
import { currentEpoch, nextEpoch } from "../../src/cluster/epochs.js";
import { LocalCluster } from "../../src/local-cluster/local-cluster.js";
import { EtcdMetadataStore, type MetadataStore } from "../../src/metadata/index.js";
import { startDaemon, tempDir } from "../helpers/daemon.js";
import { canRun } from "../helpers/env.js";
import { NbdTestClient } from "../helpers/nbd-client.js";

const MIB = 1024 * 1024;
const EPERM = 1;

async function code(p: Promise<unknown>): Promise<string> {
  return p.then(
    () => "none",
    (e: unknown) => (isKeelsonError(e) ? e.code : String(e)),
  );
}

describe("epoch fencing", () => {
  it("a replica fenced at a newer epoch refuses every request of the old frontend; nothing it sends after is acknowledged", async () => {
    using dir = tempDir("keelson-fence-");
    const poolPath = path.join(dir.path, "pool.img");
    let d = await startDaemon({ poolPath, poolSize: "256M", dir: dir.path });
    try {
      let client = d.client();
      await client.createVolume({ name: "r", sizeBytes: 16 * MIB });
      expect((await client.fenceVolume({ name: "r", epoch: 1 })).epoch).toBe(1);
      const old = await NbdTestClient.open(d.nbdAddress, "r#1");
      expect((await old.write(0, Buffer.alloc(MIB, 1))).error).toBe(0);
      // A new attachment elsewhere takes epoch 2 and fences the replica first.
      await client.fenceVolume({ name: "r", epoch: 2 });
      expect((await old.write(0, Buffer.alloc(MIB, 0xee))).error).toBe(EPERM);
      expect((await old.writeZeroes(0, MIB)).error).toBe(EPERM);
      expect((await old.flush()).error).toBe(EPERM);
      expect((await old.read(0, 4096)).error).toBe(EPERM);
      old.close();
      // The old epoch (and the bare name) cannot open the volume any more.
      await expect(NbdTestClient.open(d.nbdAddress, "r#1")).rejects.toThrow();
      await expect(NbdTestClient.open(d.nbdAddress, "r")).rejects.toThrow();
      const current = await NbdTestClient.open(d.nbdAddress, "r#2");
      const got = await current.read(0, MIB);
      expect(got.data.equals(Buffer.alloc(MIB, 1))).toBe(true); // the stale write never landed
      expect((await current.write(MIB, Buffer.alloc(MIB, 2))).error).toBe(0);
      expect((await current.flush()).error).toBe(0);
      current.close();
      expect(await code(client.fenceVolume({ name: "r", epoch: 1 }))).toBe("EPOCH_STALE");
      expect(await code(client.fenceVolume({ name: "r", epoch: 0 }))).toBe("INVALID_ARGUMENT");
      expect(await code(client.fenceVolume({ name: "missing", epoch: 5 }))).toBe("VOLUME_NOT_FOUND");
      // The fence is durable: after kill -9 the old epoch is still refused.
      await d.kill9();
      d = await startDaemon({ poolPath, dir: dir.path });
      client = d.client();
      expect((await client.getVolume({ name: "r" })).epoch).toBe(2);
      await expect(NbdTestClient.open(d.nbdAddress, "r#1")).rejects.toThrow();
      const again = await NbdTestClient.open(d.nbdAddress, "r#2");
      expect((await again.read(MIB, MIB)).data.equals(Buffer.alloc(MIB, 2))).toBe(true);
      again.close();
    } finally {
      await d.stop();
    }
  });

  it("epochs from etcd: 8 attachers racing get distinct, gap-free epochs", async (t) => {
    if (!canRun({ tools: ["etcd"] }, t.task.name)) return t.skip();
    const dir = path.join(os.tmpdir(), `keelson-epochs-${process.pid}-${Date.now()}`);
    await using cluster = await LocalCluster.start({ nodes: 0, dir, isolation: "loopback" });
    const clients = Array.from({ length: 8 }, () => EtcdMetadataStore.connect(cluster.etcdEndpoint));
    try {
      const got = (await Promise.all(clients.flatMap((c) => [1, 2, 3].map(() => nextEpoch(c, "vol"))))).sort((a, b) => a - b);
      expect(got).toEqual(Array.from({ length: 24 }, (_, i) => i + 1));
      expect(await currentEpoch(clients[0] as MetadataStore, "vol")).toBe(24);
      expect(await currentEpoch(clients[0] as MetadataStore, "other")).toBe(0);
    } finally {
      for (const c of clients) c.close();
    }
  });
});
