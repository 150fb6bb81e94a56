import { describe, expect, it } from "vitest";
import { AREAS, KEY_PREFIX, keyOf, kindPrefix, LEADER_ELECTION, parseKey, type RecordKind, refs } from "./keys.js";

describe("key layout", () => {
  it("keeps today's keys: /keelson/v1/<area>/<id>", () => {
    expect(keyOf(refs.node("n1"))).toBe("/keelson/v1/nodes/n1");
    expect(keyOf(refs.alive("n1"))).toBe("/keelson/v1/alive/n1");
    expect(keyOf(refs.epoch("db"))).toBe("/keelson/v1/epochs/db");
    expect(keyOf(refs.volume("db"))).toBe("/keelson/v1/volumes/db");
    expect(keyOf(refs.attachments("db"))).toBe("/keelson/v1/attachments/db");
    expect(keyOf(refs.snapshot("db", "s1"))).toBe("/keelson/v1/snapshots/db/s1");
    expect(keyOf(refs.disk("n1"))).toBe("/keelson/v1/disks/n1");
    expect(keyOf(refs.status("db"))).toBe("/keelson/v1/status/db");
    expect(LEADER_ELECTION).toBe("/keelson/v1/leader");
    expect(kindPrefix("snapshot")).toBe("/keelson/v1/snapshots/");
  });

  it("parses every record key back to the reference it was built from", () => {
    for (const kind of Object.keys(AREAS) as RecordKind[]) {
      const ref = { kind, id: kind === "snapshot" ? "vol/snap" : "some-id" };
      expect(parseKey(keyOf(ref))).toEqual(ref);
    }
  });

  it("parses keys that are no record as null: the election, unknown areas, foreign prefixes, empty ids", () => {
    expect(parseKey(`${LEADER_ELECTION}`)).toBeNull();
    expect(parseKey(`${KEY_PREFIX}/unknown/x`)).toBeNull();
    expect(parseKey("/other/v1/volumes/x")).toBeNull();
    expect(parseKey(`${KEY_PREFIX}/volumes/`)).toBeNull();
    expect(parseKey(`${KEY_PREFIX}/volumes`)).toBeNull();
  });
});
