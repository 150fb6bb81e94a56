import { isKeelsonError } from "@keelson/sdk";
import { describe, expect, it } from "vitest";
import { type PlacementCandidate, placeReplicas } from "./placement.js";

const node = (nodeId: string, zone: string, freeBytes = 100, alive = true): PlacementCandidate => ({
  nodeId,
  zone,
  freeBytes,
  alive,
});

function refusal(place: () => unknown): unknown {
  try {
    place();
  } catch (error) {
    return error;
  }
  throw new Error("placement did not refuse");
}

describe("placeReplicas", () => {
  it("puts replicas on distinct nodes in distinct zones before doubling up, most free space first", () => {
    const nodes = [node("a", "z1", 50), node("b", "z1", 90), node("c", "z2", 10), node("d", "z3", 20)];
    expect(placeReplicas(nodes, 3).map((n) => n.nodeId)).toEqual(["b", "d", "c"]);
    expect(placeReplicas(nodes, 4).map((n) => n.nodeId)).toEqual(["b", "d", "c", "a"]);
  });

  it("keeps a replica on the preferred (attaching) node for local reads", () => {
    const nodes = [node("a", "z1", 50), node("b", "z1", 90), node("c", "z2", 10)];
    expect(placeReplicas(nodes, 2, "a").map((n) => n.nodeId)).toEqual(["a", "c"]);
  });

  it("skips dead and full nodes, and says which qualify when too few do", () => {
    const nodes = [node("a", "z1"), node("b", "z2", 0), node("c", "z3", 100, false)];
    expect(placeReplicas(nodes, 1).map((n) => n.nodeId)).toEqual(["a"]);
    const e = refusal(() => placeReplicas(nodes, 3));
    expect(isKeelsonError(e, "NO_SPACE") && e.message).toContain("1 qualify (a)");
    expect(isKeelsonError(e) && e.message).toContain("left out: b: pool full; c: no liveness lease");
  });

  it("is UNAVAILABLE (retryable), not NO_SPACE, when nodes that are down or did not answer would make up the number", () => {
    const down = refusal(() => placeReplicas([node("a", "z1"), node("b", "z2"), node("c", "z3", 100, false)], 3));
    expect(isKeelsonError(down, "UNAVAILABLE") && down.retryable && down.message).toContain("c: no liveness lease");
    const silent = refusal(() =>
      placeReplicas([node("a", "z1"), node("b", "z2"), { ...node("c", "z3", 0), problem: "did not answer" }], 3),
    );
    expect(isKeelsonError(silent, "UNAVAILABLE") && silent.message).toContain("c: did not answer");
  });
});
