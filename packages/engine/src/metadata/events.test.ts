import { describe, expect, it } from "vitest";
import { eventOf } from "./events.js";
import { keyOf, refs } from "./keys.js";

const change = (key: string, value: unknown, deleted = false) => ({
  key,
  value: typeof value === "string" ? value : JSON.stringify(value),
  deleted,
});

describe("key changes as events", () => {
  it("a volume record becomes a volume event; deleted and corrupt ones carry no record", () => {
    const record = { name: "db", sizeBytes: 8, replicas: ["a", "b"], inSync: ["a"], createdAtMs: 1 };
    expect(eventOf(change(keyOf(refs.volume("db")), record))).toEqual({ type: "volume", volume: "db", deleted: false, record });
    expect(eventOf(change(keyOf(refs.volume("db")), "", true))).toEqual({
      type: "volume",
      volume: "db",
      deleted: true,
      record: null,
    });
    expect(eventOf(change(keyOf(refs.volume("db")), "{oops"))).toEqual({
      type: "volume",
      volume: "db",
      deleted: false,
      record: null,
    });
  });

  it("attachments, snapshots, nodes, liveness and status map to their events", () => {
    const entries = [{ nodeId: "a", readOnly: true, epoch: 3, attachedAtMs: 1 }];
    expect(eventOf(change(keyOf(refs.attachments("db")), entries))).toEqual({ type: "attachments", volume: "db", entries });
    expect(eventOf(change(keyOf(refs.attachments("db")), "", true))).toEqual({ type: "attachments", volume: "db", entries: [] });
    const snap = { volume: "db", name: "s1", holders: ["a"], labels: {}, createdAtMs: 1 };
    expect(eventOf(change(keyOf(refs.snapshot("db", "s1")), snap))).toEqual({
      type: "snapshot",
      volume: "db",
      name: "s1",
      deleted: false,
      holders: ["a"],
    });
    const node = {
      nodeId: "a",
      controlAddress: "",
      nbdAddress: "",
      storageAddress: "",
      zone: "",
      version: "",
      registeredAtMs: 1,
      state: "down",
      stateSinceMs: 1,
    };
    expect(eventOf(change(keyOf(refs.node("a")), node))).toEqual({ type: "node", nodeId: "a", state: "down" });
    expect(eventOf(change(keyOf(refs.alive("a")), "", true))).toEqual({ type: "alive", nodeId: "a", alive: false });
    const status = { nodeId: "a", epoch: 2, state: "degraded", replicas: [] };
    expect(eventOf(change(keyOf(refs.status("db")), status))).toEqual({ type: "status", volume: "db", status });
  });

  it("keys that are no event give null: epochs, disks, the election, a snapshot key without a name, a bad status", () => {
    expect(eventOf(change(keyOf(refs.epoch("db")), "3"))).toBeNull();
    expect(eventOf(change(keyOf(refs.disk("a")), {}))).toBeNull();
    expect(eventOf(change("/keelson/v1/leader/123", "a"))).toBeNull();
    expect(eventOf(change("/keelson/v1/snapshots/db", {}))).toBeNull();
    expect(eventOf(change(keyOf(refs.status("db")), "{bad"))).toBeNull();
  });

  it("a pool space alert is an event when put; a deleted or malformed one is none", () => {
    const alert = {
      nodeId: "node1",
      poolUid: "u",
      thresholdPercent: 90,
      state: "raised",
      usedBytes: 95,
      totalBytes: 100,
      atMs: 1,
    };
    const key = keyOf(refs.spaceAlert("node1", 90));
    expect(key).toBe("/keelson/v1/space-alerts/node1/90");
    expect(eventOf(change(key, alert))).toEqual({ type: "spaceAlert", alert });
    expect(eventOf(change(key, "", true))).toBeNull();
    expect(eventOf(change(key, { ...alert, state: "loud" }))).toBeNull();
  });
});
