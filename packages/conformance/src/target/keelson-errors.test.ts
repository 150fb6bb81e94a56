import { KeelsonError } from "@keelson/sdk";
import { describe, expect, it } from "vitest";
import { isConformanceError } from "../errors.js";
import { keelsonCallRetrying } from "./keelson-errors.js";

const unavailable = () => new KeelsonError({ code: "UNAVAILABLE", message: "node2: no liveness lease" });

describe("keelsonCallRetrying", () => {
  it("retries UNAVAILABLE until the call succeeds", async () => {
    let calls = 0;
    const v = await keelsonCallRetrying("create volume v", async () => {
      if (++calls < 3) throw unavailable();
      return "made";
    });
    expect(v).toBe("made");
    expect(calls).toBe(3);
  });

  it("does not retry any other code", async () => {
    let calls = 0;
    const e = await keelsonCallRetrying("create volume v", async () => {
      calls++;
      throw new KeelsonError({ code: "NO_SPACE", message: "pool full" });
    }).catch((error: unknown) => error);
    expect(calls).toBe(1);
    expect(isConformanceError(e) && e.code === "TARGET_FAILED" && e.message).toBe("create volume v: NO_SPACE: pool full");
  });

  it("gives up after its time, with the last UNAVAILABLE", async () => {
    let calls = 0;
    const e = await keelsonCallRetrying(
      "create volume v",
      async () => {
        calls++;
        throw unavailable();
      },
      1_200,
    ).catch((error: unknown) => error);
    expect(calls).toBeGreaterThanOrEqual(2);
    expect(isConformanceError(e) && e.message).toBe("create volume v: UNAVAILABLE: node2: no liveness lease");
  });
});
