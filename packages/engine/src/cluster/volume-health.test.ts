import { describe, expect, it } from "vitest";
import type { ClusterVolumeRecord } from "../metadata/index.js";
import { replicatedVolumeState } from "./volume-health.js";

const record: ClusterVolumeRecord = {
  name: "db",
  sizeBytes: 1 << 20,
  replicas: ["n1", "n2", "n3"],
  inSync: ["n1", "n2", "n3"],
  createdAtMs: 0,
};
const all = new Set(["n1", "n2", "n3"]);
const writer = { nodeId: "n1", readOnly: false, epoch: 4, attachedAtMs: 0 };

describe("replicatedVolumeState", () => {
  it("not attached: from the record and liveness", () => {
    expect(replicatedVolumeState({ record, writer: undefined, status: null, alive: all })).toBe("healthy");
    expect(replicatedVolumeState({ record, writer: undefined, status: null, alive: new Set(["n1", "n2"]) })).toBe("degraded");
    const lagging = { ...record, inSync: ["n2"] };
    expect(replicatedVolumeState({ record: lagging, writer: undefined, status: null, alive: all })).toBe("degraded");
    expect(replicatedVolumeState({ record: lagging, writer: undefined, status: null, alive: new Set(["n1", "n3"]) })).toBe(
      "faulted",
    );
  });

  it("attached writable: what the current writer published; a stale or foreign status is ignored", () => {
    const status = { nodeId: "n1", epoch: 4, state: "rebuilding", replicas: [] };
    expect(replicatedVolumeState({ record, writer, status, alive: all })).toBe("rebuilding");
    expect(replicatedVolumeState({ record, writer, status: { ...status, epoch: 3 }, alive: all })).toBe("healthy");
    expect(replicatedVolumeState({ record, writer, status: { ...status, state: "detached" }, alive: all })).toBe("healthy");
    expect(replicatedVolumeState({ record, writer: undefined, status, alive: all })).toBe("healthy");
  });
});
