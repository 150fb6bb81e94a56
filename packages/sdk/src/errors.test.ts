import { Metadata, type ServiceError, status } from "@grpc/grpc-js";
import { describe, expect, it } from "vitest";
import { backoffDelayMs, MAX_RETRY_DELAY_MS } from "./client.js";
import { ERROR_CODES, fromServiceError, GRPC_STATUS_BY_CODE, isKeelsonError, KeelsonError, toServiceError } from "./errors.js";

describe("errors", () => {
  it("every code survives the trip through a gRPC error and keeps the gRPC error as cause", () => {
    for (const code of Object.keys(ERROR_CODES) as Array<keyof typeof ERROR_CODES>) {
      const wire = toServiceError(new KeelsonError({ code, message: `m-${code}` }));
      expect(wire.code).toBe(GRPC_STATUS_BY_CODE[code]);
      const back = fromServiceError({ ...wire, message: "", name: "Error" } as ServiceError);
      expect(back.code).toBe(code);
      expect(back.message).toBe(`m-${code}`);
      expect(back.cause).toMatchObject({ code: GRPC_STATUS_BY_CODE[code] });
    }
  });

  it("a server that sends no keelson code gets the closest code for its status", () => {
    const e = fromServiceError({ code: status.NOT_FOUND, details: "x", metadata: new Metadata() } as ServiceError);
    expect(e.code).toBe("VOLUME_NOT_FOUND");
    const u = fromServiceError({ code: status.UNIMPLEMENTED, details: "x", metadata: new Metadata() } as ServiceError);
    expect(u.code).toBe("INTERNAL");
    const forged = new Metadata();
    forged.set("keelson-code", "NOT_A_CODE");
    expect(fromServiceError({ code: status.UNAVAILABLE, details: "", metadata: forged } as ServiceError).code).toBe(
      "UNAVAILABLE",
    );
  });

  it("only UNAVAILABLE is retryable", () => {
    expect(new KeelsonError({ code: "UNAVAILABLE", message: "" }).retryable).toBe(true);
    expect(new KeelsonError({ code: "VOLUME_NOT_FOUND", message: "" }).retryable).toBe(false);
    expect(isKeelsonError(new Error("x"))).toBe(false);
  });

  it("backoff doubles up to its cap, with full jitter", () => {
    expect(backoffDelayMs(1, 100, () => 0.999)).toBe(99);
    expect(backoffDelayMs(3, 100, () => 0.5)).toBe(200);
    expect(backoffDelayMs(30, 100, () => 0.999)).toBe(MAX_RETRY_DELAY_MS - 2);
    expect(backoffDelayMs(5, 100, () => 0)).toBe(0);
  });
});
