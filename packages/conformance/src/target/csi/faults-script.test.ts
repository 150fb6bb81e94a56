import fs from "node:fs";
import os from "node:os";
import path from "node:path";
import { afterEach, describe, expect, it } from "vitest";
import { FaultsScript } from "./faults-script.js";

const dirs: string[] = [];

/** A faults script that records its calls in `calls` and answers from `body` (sh, "$1" is the verb). */
function script(body: string): { file: string; calls: () => string[] } {
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), "kc-faults-"));
  dirs.push(dir);
  const file = path.join(dir, "faults.sh");
  const log = path.join(dir, "calls");
  fs.writeFileSync(file, `#!/bin/sh\necho "$*" >> ${log}\n${body}\n`, { mode: 0o755 });
  return { file, calls: () => (fs.existsSync(log) ? fs.readFileSync(log, "utf8").trim().split("\n") : []) };
}

afterEach(() => {
  for (const d of dirs.splice(0)) fs.rmSync(d, { recursive: true, force: true });
});

describe("the csi target's faults script", () => {
  it("declares what it prints under `capabilities`, runs each verb with its arguments, and reads the node it killed and the replicas", async () => {
    const s = script(`case "$1" in
  capabilities) printf 'kill-storage-process\\nkill-serving-node\\nreplication\\nreplicas\\n' ;;
  kill-serving-node) echo "killing..."; echo node3 ;;
  replicas) printf 'node1 healthy\\nnode2 rebuilding\\nnode3 weird\\n' ;;
esac`);
    const f = await FaultsScript.load(s.file);
    expect([...f.capabilities].sort()).toEqual(["fault-kill-serving-node", "fault-kill-storage-process", "replication"]);
    expect(f.listsReplicas).toBe(true);
    await f.killStorageProcess("node2");
    expect(await f.killServingNode("pvc-1")).toBe("node3");
    await f.restore("node2");
    expect(await f.replicas("pvc-1")).toEqual([
      { nodeId: "node1", state: "healthy" },
      { nodeId: "node2", state: "rebuilding" },
      { nodeId: "node3", state: "unknown" },
    ]);
    expect(s.calls()).toEqual([
      "capabilities",
      "kill-storage-process node2",
      "kill-serving-node pvc-1",
      "restore node2",
      "replicas pvc-1",
    ]);
  });

  it("an unknown capability is INVALID_ARGUMENT naming it; a failing verb is TARGET_FAILED with the script's words", async () => {
    const unknown = script(`[ "$1" = capabilities ] && echo fly`);
    await expect(FaultsScript.load(unknown.file)).rejects.toMatchObject({
      code: "INVALID_ARGUMENT",
      message: expect.stringMatching(/"fly"/),
    });
    const failing = script(`[ "$1" = capabilities ] && { echo partition; exit 0; }\necho "no such node" >&2; exit 3`);
    const f = await FaultsScript.load(failing.file);
    await expect(f.partition("node9")).rejects.toMatchObject({
      code: "TARGET_FAILED",
      message: expect.stringMatching(/exit 3: no such node/),
    });
    const silent = script(`[ "$1" = capabilities ] && echo kill-serving-node; true`);
    await expect((await FaultsScript.load(silent.file)).killServingNode("v")).rejects.toMatchObject({ code: "TARGET_FAILED" });
  });

  it("a script that is not there is TARGET_FAILED, not a crash", async () => {
    await expect(FaultsScript.load("/nonexistent/faults.sh")).rejects.toMatchObject({ code: "TARGET_FAILED" });
  });
});
