import { describe, expect, it } from "vitest";
import { parseParameterList } from "./csi-target.js";

describe("--parameters", () => {
  it("KEY=VALUE pairs, values may hold '=', blanks around are dropped", () => {
    expect(parseParameterList("replicas=3, fsType=xfs,mkfsOptions=-m 0 -E lazy_itable_init=0")).toEqual({
      replicas: "3",
      fsType: "xfs",
      mkfsOptions: "-m 0 -E lazy_itable_init=0",
    });
    expect(parseParameterList("")).toEqual({});
  });

  it("a pair without a key is INVALID_ARGUMENT naming it", () => {
    expect(() => parseParameterList("replicas")).toThrow(/"replicas" is not KEY=VALUE/);
    expect(() => parseParameterList("=3")).toThrow(/INVALID_ARGUMENT|not KEY=VALUE/);
  });
});
