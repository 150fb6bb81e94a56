import { isKeelsonError } from "@keelson/sdk";
import { describe, expect, it } from "vitest";
import { type PlacementCandidate, placeReplicas } from "./placement.js";

const node = (nodeId: string, zone: string, freeBytes = 100, alive = true): PlacementCandidate => ({
  nodeId,
  zone,
  freeBytes,
  alive,
});

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
    const e = (() => {
      try {
        placeReplicas(nodes, 2);
      } catch (error) {
        return error;
      }
    })();
    expect(isKeelsonError(e, "NO_SPACE") && e.message).toContain("1 qualify (a)");
    expect(isKeelsonError(e) && e.message).toContain("left out: b: pool full; c: no liveness lease");
  });
});
