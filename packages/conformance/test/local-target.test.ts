import { execFileSync } from "node:child_process";
import fs from "node:fs";
import os from "node:os";
import path from "node:path";
import { describe, expect, it } from "vitest";
import { startLocalTarget } from "../src/target/local.js";
import { canRun } from "../src/testing/env.js";

function nbdUri(p: { kind: string; uri?: string }): string {
  if (p.kind !== "nbd" || !p.uri) throw new Error(`expected an NBD data path, got ${JSON.stringify(p)}`);
  return p.uri;
}

describe("local target", () => {
  it("provisions, attaches as NBD, block device and filesystem, reads replicas on their own, and leaves nothing behind", async (t) => {
    if (!canRun({ root: true, tools: ["etcd", "nbdfuse", "nbdcopy", "mkfs.ext4"] }, t.task.name)) return t.skip();
    const dir = fs.mkdtempSync(path.join(os.tmpdir(), "kc-local-"));
    const target = await startLocalTarget({ nodes: 3, dir });
    try {
      expect([...target.capabilities]).toEqual(expect.arrayContaining(["replication", "fault-partition-node", "filesystem"]));
      await target.provision({ name: "single", sizeBytes: 64 << 20, replicas: 1 });
      const fsAtt = await target.attach({ volume: "single", mode: "filesystem" });
      if (fsAtt.dataPath.kind !== "filesystem") throw new Error("expected a mounted filesystem");
      fs.writeFileSync(path.join(fsAtt.dataPath.mountPath, "hello"), "conformance");
      expect(fs.readFileSync(path.join(fsAtt.dataPath.mountPath, "hello"), "utf8")).toBe("conformance");
      await fsAtt.detach();
      await fsAtt.detach();

      await target.provision({ name: "repl", sizeBytes: 16 << 20, replicas: 3 });
      const att = await target.attach({ volume: "repl", nodeId: "node2" });
      const data = path.join(dir, "data.bin");
      fs.writeFileSync(data, Buffer.alloc(16 << 20, 0x5a));
      execFileSync("nbdcopy", [data, nbdUri(att.dataPath)]);
      const health = await target.health("repl");
      expect(health).toMatchObject({ state: "healthy", servingNode: "node2" });
      expect(health.replicas).toHaveLength(3);
      const replicas = await target.replicaPaths("repl");
      expect(replicas.map((r) => r.nodeId).sort()).toEqual(["node1", "node2", "node3"]);
      for (const r of replicas) {
        const back = path.join(dir, `${r.nodeId}.bin`);
        execFileSync("nbdcopy", [nbdUri(r.dataPath), back]);
        expect(fs.readFileSync(back).equals(fs.readFileSync(data)), `replica on ${r.nodeId}`).toBe(true);
      }
      await att.detach();
      expect((await target.health("repl")).state).toBe("detached");
    } finally {
      await target.close();
    }
    expect(fs.existsSync(dir)).toBe(false);
    expect(execFileSync("ip", ["netns", "list"], { encoding: "utf8" })).not.toMatch(/keelson/);
  });
});
