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
    expect(placeReplicas(nodes, { replicas: 3, sizeBytes: 10 }).map((n) => n.nodeId)).toEqual(["b", "d", "c"]);
    expect(placeReplicas(nodes, { replicas: 4, sizeBytes: 10 }).map((n) => n.nodeId)).toEqual(["b", "d", "c", "a"]);
  });

  it("keeps a replica on the preferred (attaching) node for local reads", () => {
    const nodes = [node("a", "z1", 50), node("b", "z1", 90), node("c", "z2", 10)];
    expect(placeReplicas(nodes, { replicas: 2, sizeBytes: 10, preferredNodeId: "a" }).map((n) => n.nodeId)).toEqual(["a", "c"]);
  });

  it("skips dead and full nodes, and says which qualify when too few do", () => {
    const nodes = [node("a", "z1"), node("b", "z2", 0), node("c", "z3", 100, false)];
    expect(placeReplicas(nodes, { replicas: 1, sizeBytes: 10 }).map((n) => n.nodeId)).toEqual(["a"]);
    const e = refusal(() => placeReplicas(nodes, { replicas: 3, sizeBytes: 10 }));
    expect(isKeelsonError(e, "NO_SPACE") && e.message).toContain("1 qualify (a)");
    expect(isKeelsonError(e) && e.message).toContain("left out: b: pool full; c: no liveness lease");
  });

  it("is UNAVAILABLE (retryable), not NO_SPACE, when nodes that are down or did not answer would make up the number", () => {
    const down = refusal(() =>
      placeReplicas([node("a", "z1"), node("b", "z2"), node("c", "z3", 100, false)], { replicas: 3, sizeBytes: 10 }),
    );
    expect(isKeelsonError(down, "UNAVAILABLE") && down.retryable && down.message).toContain("c: no liveness lease");
    const silent = refusal(() =>
      placeReplicas([node("a", "z1"), node("b", "z2"), { ...node("c", "z3", 0), problem: "did not answer" }], {
        replicas: 3,
        sizeBytes: 10,
      }),
    );
    expect(isKeelsonError(silent, "UNAVAILABLE") && silent.message).toContain("c: did not answer");
  });

  it("a node whose pool cannot promise the size under its over-commit limit does not qualify, and the refusal says why", () => {
    const limit = (provisionedBytes: number) => ({ provisionedBytes, limitBytes: 200, overcommitPercent: 200 });
    const nodes = [
      { ...node("a", "z1", 90), provisioning: limit(150) },
      { ...node("b", "z2", 50), provisioning: limit(0) },
      { ...node("c", "z3", 10), provisioning: limit(100) },
    ];
    // a has the most free space but has promised 150 of its 200: 60 more do not fit, 50 do.
    expect(placeReplicas(nodes, { replicas: 2, sizeBytes: 60 }).map((n) => n.nodeId)).toEqual(["b", "c"]);
    expect(placeReplicas(nodes, { replicas: 2, sizeBytes: 50, preferredNodeId: "a" }).map((n) => n.nodeId)).toEqual(["a", "b"]);
    const e = refusal(() => placeReplicas(nodes, { replicas: 3, sizeBytes: 60 }));
    expect(isKeelsonError(e, "LIMIT_EXCEEDED") && e.message).toContain(
      "a: over-commit limit: 150 B provisioned + 60 B asked > 200 B (200% of its data capacity)",
    );
    // Too few even were the limits raised: full nodes make it NO_SPACE.
    const full = refusal(() => placeReplicas([...nodes, node("d", "z4", 0)], { replicas: 4, sizeBytes: 60 }));
    expect(isKeelsonError(full, "NO_SPACE") && full.message).toContain("d: pool full");
  });
});
