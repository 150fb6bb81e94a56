import { status } from "@grpc/grpc-js";
import { KeelsonError } from "@keelson/sdk";
import { describe, expect, it } from "vitest";
import { CsiError, toCsiStatus, VolumeLocks } from "./csi-errors.js";

describe("CSI errors", () => {
  it("a second operation on a volume while the first runs is ABORTED; other volumes and later calls go on", async () => {
    const locks = new VolumeLocks();
    let release = () => {};
    const first = locks.run("v1", "CreateVolume", () => new Promise<string>((r) => (release = () => r("first"))));
    await expect(locks.run("v1", "DeleteVolume", async () => "second")).rejects.toMatchObject({ status: status.ABORTED });
    expect(await locks.run("v2", "CreateVolume", async () => "other")).toBe("other");
    release();
    expect(await first).toBe("first");
    expect(await locks.run("v1", "DeleteVolume", async () => "later")).toBe("later");
  });

  it("the engine's typed errors keep their gRPC status and code; an unknown error is INTERNAL, never OK", () => {
    expect(toCsiStatus(new KeelsonError({ code: "VOLUME_NOT_FOUND", message: "no v" }))).toEqual({
      code: status.NOT_FOUND,
      details: "VOLUME_NOT_FOUND: no v",
    });
    expect(toCsiStatus(new KeelsonError({ code: "NO_SPACE", message: "full" })).code).toBe(status.RESOURCE_EXHAUSTED);
    expect(toCsiStatus(new CsiError(status.OUT_OF_RANGE, "x"))).toEqual({ code: status.OUT_OF_RANGE, details: "x" });
    expect(toCsiStatus(new TypeError("boom")).code).toBe(status.INTERNAL);
    expect(toCsiStatus("weird").code).toBe(status.INTERNAL);
  });
});
