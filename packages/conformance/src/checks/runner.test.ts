import { describe, expect, it } from "vitest";
import { ConformanceError } from "../errors.js";
import type { Profile } from "../profile/profile.js";
import type { Target } from "../target/target.js";
import type { Check } from "./check.js";
import { fakeContext } from "./common/fake-context.js";
import { runChecks } from "./runner.js";

const PROFILE: Profile = { name: "test", path: "", thresholds: {} };

function check(id: string, needs: Check["needs"], run: Check["run"]): Check {
  return { id, family: "ha", title: id, measures: "", needs, run } as Check;
}

/** A target with fault capabilities whose `restore` of node2 fails as a node that does not come back would. */
function targetWhereNode2StaysDown(restored: string[]): Target {
  return fakeContext({
    kind: "fake",
    capabilities: new Set(["fault-kill-storage-process"]),
    nodeIds: () => ["node1", "node2"],
    deleteVolume: async () => undefined,
    faults: {
      restore: async (nodeId: string) => {
        restored.push(nodeId);
        if (nodeId === "node2") throw new ConformanceError({ code: "TARGET_FAILED", message: "node2 not alive after 30000 ms" });
      },
    } as unknown as Target["faults"],
  } as Partial<Target>).target;
}

describe("runChecks: a check that injects faults leaves the target serving, or ends in error", () => {
  it("a passing check whose node does not come back is an error naming the node, and the next check still runs", async () => {
    const restored: string[] = [];
    const target = targetWhereNode2StaysDown(restored);
    const results = await runChecks({
      target,
      checks: [
        check("ha.kills", ["fault-kill-storage-process"], async () => ({ figures: [] })),
        check("ha.after", [], async () => ({ figures: [] })),
      ],
      profile: PROFILE,
      duration: "short",
      faults: 0,
      workDir: fakeContext().workDir,
    });
    expect(results[0]?.verdict).toBe("error");
    expect(results[0]?.message).toMatch(/did not recover after the check: node2: TARGET_FAILED: node2 not alive/);
    expect(restored).toEqual(["node1", "node2"]);
    // A check without faults does not restore anything.
    expect(results[1]?.verdict).toBe("pass");
  });

  it("a check that threw keeps its own error and adds the failed recovery", async () => {
    const target = targetWhereNode2StaysDown([]);
    const [r] = await runChecks({
      target,
      checks: [
        check("ha.throws", ["fault-kill-storage-process"], async () => {
          throw new ConformanceError({ code: "TARGET_FAILED", message: "attach refused" });
        }),
      ],
      profile: PROFILE,
      duration: "short",
      faults: 0,
      workDir: fakeContext().workDir,
    });
    expect(r?.verdict).toBe("error");
    expect(r?.message).toMatch(/^TARGET_FAILED: attach refused; the target did not recover/);
  });
});
