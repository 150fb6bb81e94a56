import fs from "node:fs";
import os from "node:os";
import path from "node:path";
import { describe, expect, it } from "vitest";
import { CSI_PROTO_FILE, CSI_SPEC_VERSION, loadCsiRoot } from "../src/csi-proto.js";
import { compareWithFacts, readFacts } from "./csi-facts.js";

describe("csi.proto against the published CSI specification", () => {
  it(`every service, RPC, message, field (number, type, label, oneof), enum value and option is the spec v${CSI_SPEC_VERSION}'s, and nothing else is there`, async () => {
    const facts = readFacts();
    expect(facts.version).toBe(CSI_SPEC_VERSION);
    const mismatches = compareWithFacts(await loadCsiRoot(), fs.readFileSync(CSI_PROTO_FILE, "utf8"), facts);
    expect(mismatches).toEqual([]);
  });

  it("the comparison finds a wrong field number, a missing enum value, a lost secret marking and an extra field", async () => {
    const text = fs.readFileSync(CSI_PROTO_FILE, "utf8");
    const broken = text
      .replace("CapacityRange capacity_range = 2;", "CapacityRange capacity_range = 9;")
      .replace("MULTI_NODE_MULTI_WRITER = 5;", "")
      .replace("map<string, string> secrets = 2 [(csi_secret) = true];", "map<string, string> secrets = 2;")
      .replace("message ProbeRequest {", "message ProbeRequest {\n  string extra = 1;");
    expect(broken).not.toBe(text);
    const dir = fs.mkdtempSync(path.join(os.tmpdir(), "keelson-csi-proto-"));
    try {
      const file = path.join(dir, "csi.proto");
      fs.writeFileSync(file, broken);
      const mismatches = compareWithFacts(await loadCsiRoot(file), broken, readFacts()).join("\n");
      expect(mismatches).toMatch(/CreateVolumeRequest\.capacity_range number: proto 9, facts 2/);
      expect(mismatches).toMatch(/enum VolumeCapability\.AccessMode\.Mode values/);
      expect(mismatches).toMatch(/\.secrets csi_secret: proto false, facts true/);
      expect(mismatches).toMatch(/message ProbeRequest fields: proto \["extra"\], facts \[\]/);
    } finally {
      fs.rmSync(dir, { recursive: true, force: true });
    }
  });
});
