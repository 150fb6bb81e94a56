import { type ServerUnaryCall, type ServiceError, status } from "@grpc/grpc-js";
import { ERROR_CODE_METADATA_KEY, KeelsonError } from "@keelson/sdk";
import { describe, expect, it } from "vitest";
import { fromEtcdError } from "../metadata/index.js";
import type { LogLevel } from "../util/log.js";
import { positive, requireString, unary } from "./unary.js";

/** Runs a handler through the unary adapter as grpc-js would; what reached the callback, and the log levels. */
async function call<Res>(fn: (req: string) => Promise<Res>) {
  const levels: LogLevel[] = [];
  const handler = unary({ log: { log: (level) => levels.push(level) } }, "GetNode", fn);
  const result = await new Promise<{ error: Partial<ServiceError> | null; value: Res | null | undefined }>((resolve) =>
    handler({ request: "req" } as ServerUnaryCall<string, Res>, (error, value) =>
      resolve({ error: error as Partial<ServiceError> | null, value }),
    ),
  );
  return { ...result, levels };
}

describe("the unary edge", () => {
  it("passes the handler's result through", async () => {
    const { error, value, levels } = await call(async (req) => `${req}!`);
    expect(error).toBeNull();
    expect(value).toBe("req!");
    expect(levels).toEqual([]);
  });

  it("a KeelsonError keeps its code: gRPC status plus the keelson-code metadata, logged at info", async () => {
    const { error, levels } = await call(async () => {
      throw new KeelsonError({ code: "VOLUME_NOT_FOUND", message: "no volume v" });
    });
    expect(error?.code).toBe(status.NOT_FOUND);
    expect(error?.details).toBe("no volume v");
    expect(error?.metadata?.get(ERROR_CODE_METADATA_KEY)).toEqual(["VOLUME_NOT_FOUND"]);
    expect(levels).toEqual(["info"]);
  });

  it("etcd away is UNAVAILABLE (the call may succeed later), not INTERNAL: the metadata edge converted it", async () => {
    const { error } = await call(async () => {
      throw fromEtcdError(new Error("connection refused"));
    });
    expect(error?.code).toBe(status.UNAVAILABLE);
    expect(error?.details).toBe("etcd: connection refused");
    expect(error?.metadata?.get(ERROR_CODE_METADATA_KEY)).toEqual(["UNAVAILABLE"]);
  });

  it("any other error is INTERNAL with its message, logged at error", async () => {
    const { error, levels } = await call(async () => {
      throw new Error("bug");
    });
    expect(error?.code).toBe(status.INTERNAL);
    expect(error?.details).toBe("bug");
    expect(levels).toEqual(["error"]);
  });
});

describe("the unary edge on mutual TLS", () => {
  it("a caller whose certificate role may not call the method gets PERMISSION_DENIED, and the handler never runs", async () => {
    let ran = 0;
    const handler = unary({ log: { log: () => undefined }, callerCheck: "certificate-role" }, "CreateVolume", async () => {
      ran++;
      return "made";
    });
    const answer = (OU: string) =>
      new Promise<{ error: Partial<ServiceError> | null; value: unknown }>((resolve) =>
        handler(
          {
            request: "req",
            getAuthContext: () => ({ transportSecurityType: "ssl", sslPeerCertificate: { subject: { OU, CN: "c" } } }),
          } as unknown as ServerUnaryCall<string, string>,
          (error, value) => resolve({ error: error as Partial<ServiceError> | null, value }),
        ),
      );
    const denied = await answer("read-only");
    expect(denied.error?.code).toBe(status.PERMISSION_DENIED);
    expect(denied.error?.metadata?.get(ERROR_CODE_METADATA_KEY)).toEqual(["PERMISSION_DENIED"]);
    expect(ran).toBe(0);
    expect((await answer("admin")).value).toBe("made");
    expect(ran).toBe(1);
  });
});

describe("argument checks", () => {
  it("requireString takes a non-empty string and refuses anything else with INVALID_ARGUMENT naming the field", () => {
    expect(requireString("v", "name")).toBe("v");
    for (const bad of ["", undefined, 3]) {
      expect(() => requireString(bad, "name")).toThrow(
        expect.objectContaining({ code: "INVALID_ARGUMENT", message: "name is required" }),
      );
    }
  });

  it("positive takes a finite number above zero and names the bad value otherwise", () => {
    expect(positive(1.5, "iops")).toBe(1.5);
    for (const bad of [0, -1, Number.NaN, Number.POSITIVE_INFINITY]) {
      expect(() => positive(bad, "iops")).toThrow(
        expect.objectContaining({ code: "INVALID_ARGUMENT", message: `iops must be a positive number, got ${bad}` }),
      );
    }
  });
});
