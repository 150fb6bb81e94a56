import { KeelsonError } from "@keelson/sdk";
import { ClientRuntimeError, GRPCUnavailableError } from "etcd3";
import { describe, expect, it } from "vitest";
import { EtcdMetadataStore, fromEtcdError } from "./etcd-store.js";
import { refs } from "./keys.js";

describe("etcd failures at the metadata edge", () => {
  it("every etcd client error becomes UNAVAILABLE keeping its message and cause; a KeelsonError passes unchanged", () => {
    for (const error of [
      new GRPCUnavailableError("connection refused"),
      new ClientRuntimeError("closed"),
      new Error("Breaker is open"),
    ]) {
      const converted = fromEtcdError(error);
      expect(converted.code).toBe("UNAVAILABLE");
      expect(converted.message).toBe(`etcd: ${error.message}`);
      expect(converted.cause).toBe(error);
    }
    const corrupt = new KeelsonError({ code: "METADATA_CORRUPT", message: "bad" });
    expect(fromEtcdError(corrupt)).toBe(corrupt);
  });

  it("an etcd nobody listens on: a read fails with UNAVAILABLE, not an etcd3 error class", async () => {
    const store = EtcdMetadataStore.connect("http://127.0.0.1:1");
    try {
      const error = await store.get(refs.volume("db")).then(
        () => null,
        (e: unknown) => e,
      );
      expect(error).toBeInstanceOf(KeelsonError);
      expect((error as KeelsonError).code).toBe("UNAVAILABLE");
    } finally {
      store.close();
    }
  }, 20_000);
});
