import { isKeelsonError } from "@keelson/sdk";
import { describe, expect, it } from "vitest";
import { refs } from "./keys.js";
import {
  type ClusterVolumeRecord,
  decodeRecord,
  encodeRecord,
  type NodeRecord,
  recordProblem,
  tryDecodeRecord,
} from "./records.js";

const node: NodeRecord = {
  nodeId: "n1",
  controlAddress: "10.0.0.1:7420",
  nbdAddress: "10.0.0.1:10809",
  storageAddress: "10.0.0.1",
  zone: "a",
  version: "0.1.0",
  registeredAtMs: 1,
  state: "up",
  stateSinceMs: 2,
};
const volume: ClusterVolumeRecord = { name: "db", sizeBytes: 1 << 30, replicas: ["n1", "n2"], inSync: ["n1"], createdAtMs: 3 };

function corruptCode(f: () => unknown): string {
  try {
    f();
    return "none";
  } catch (error) {
    return isKeelsonError(error) ? `${error.code}: ${error.message}` : String(error);
  }
}

describe("record guards", () => {
  it("round trip: every kind's record decodes to what was encoded", () => {
    expect(decodeRecord(refs.node("n1"), encodeRecord("node", node))).toEqual(node);
    expect(decodeRecord(refs.volume("db"), encodeRecord("volume", { ...volume, retired: ["n3"] }))).toEqual({
      ...volume,
      retired: ["n3"],
    });
    const entries = [{ nodeId: "n1", readOnly: false, epoch: 4, attachedAtMs: 5 }];
    expect(decodeRecord(refs.attachments("db"), encodeRecord("attachments", entries))).toEqual(entries);
    const snapshot = { volume: "db", name: "s", holders: ["n1"], labels: { a: "b" }, createdAtMs: 6 };
    expect(decodeRecord(refs.snapshot("db", "s"), encodeRecord("snapshot", snapshot))).toEqual(snapshot);
    const disk = {
      nodeId: "n1",
      poolUid: "u",
      path: "/dev/x",
      totalBytes: 10,
      freeBytes: 5,
      volumeCount: 1,
      snapshotCount: 0,
      updatedAtMs: 7,
    };
    expect(decodeRecord(refs.disk("n1"), encodeRecord("disk", disk))).toEqual(disk);
    const status = {
      nodeId: "n1",
      epoch: 2,
      state: "healthy",
      replicas: [{ nodeId: "n1", state: "healthy", rebuiltBytes: 0, rebuildTotalBytes: 0 }],
    };
    expect(decodeRecord(refs.status("db"), encodeRecord("status", status))).toEqual(status);
  });

  it("epochs and alive stamps are stored as plain numbers, as before the metadata module", () => {
    expect(encodeRecord("epoch", 12)).toBe("12");
    expect(decodeRecord(refs.epoch("db"), "12")).toBe(12);
    expect(decodeRecord(refs.alive("n1"), String(1_700_000_000_000))).toBe(1_700_000_000_000);
  });

  it("a record that is not valid JSON is METADATA_CORRUPT naming its key", () => {
    expect(corruptCode(() => decodeRecord(refs.volume("db"), "{not json"))).toMatch(
      /^METADATA_CORRUPT: cluster record \/keelson\/v1\/volumes\/db is not valid JSON/,
    );
  });

  it("a record of the wrong shape is METADATA_CORRUPT naming its key and the bad field", () => {
    const bad = JSON.stringify({ ...volume, inSync: "n1" });
    expect(corruptCode(() => decodeRecord(refs.volume("db"), bad))).toBe(
      "METADATA_CORRUPT: cluster record /keelson/v1/volumes/db is malformed: volume.inSync is not an array",
    );
    expect(corruptCode(() => decodeRecord(refs.node("n1"), JSON.stringify({ ...node, state: "sideways" })))).toBe(
      "METADATA_CORRUPT: cluster record /keelson/v1/nodes/n1 is malformed: node.state is not one of up, down",
    );
    expect(corruptCode(() => decodeRecord(refs.epoch("db"), "-1"))).toMatch(/epoch is not a non-negative integer/);
    expect(corruptCode(() => decodeRecord(refs.attachments("db"), JSON.stringify([{ nodeId: "n1" }])))).toMatch(
      /attachments\[0\]\.readOnly is not a boolean/,
    );
    expect(
      corruptCode(() =>
        decodeRecord(
          refs.snapshot("db", "s"),
          JSON.stringify({ volume: "db", name: "s", holders: [], labels: { a: 1 }, createdAtMs: 1 }),
        ),
      ),
    ).toMatch(/snapshot\.labels\.a is not a string/);
  });

  it("optional fields may be absent but not of another type", () => {
    expect(recordProblem("volume", volume)).toBeNull();
    expect(recordProblem("volume", { ...volume, retired: [1] })).toBe("volume.retired[0] is not a string");
    expect(recordProblem("volume", { ...volume, minInSync: "2" })).toBe("volume.minInSync is not a non-negative integer");
  });

  it("tryDecodeRecord gives null instead of an error", () => {
    expect(tryDecodeRecord(refs.volume("db"), "[]")).toBeNull();
    expect(tryDecodeRecord(refs.volume("db"), encodeRecord("volume", volume))).toEqual(volume);
  });
});
