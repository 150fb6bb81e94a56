import path from "node:path";
import { Client, credentials, Metadata, type ServiceError, status } from "@grpc/grpc-js";
import { createClient, ERROR_CODE_METADATA_KEY } from "@keelson/sdk";
import { describe, expect, it } from "vitest";
import { startDaemon, tempDir } from "./helpers/daemon.js";

/** A protobuf varint. */
function varint(value: bigint): Buffer {
  const bytes: number[] = [];
  let v = value;
  while (v >= 0x80n) {
    bytes.push(Number(v & 0x7fn) | 0x80);
    v >>= 7n;
  }
  bytes.push(Number(v));
  return Buffer.from(bytes);
}

/** CreateVolumeRequest { name = 1; size_bytes = 2 } by hand, so that size_bytes may be any uint64. */
function createVolumeRequest(name: string, sizeBytes: bigint): Buffer {
  const n = Buffer.from(name);
  return Buffer.concat([Buffer.from([0x0a, n.length]), n, Buffer.from([0x10]), varint(sizeBytes)]);
}

/** Sends raw bytes as a unary call; resolves with the call's error (null when it succeeded). */
function rawCall(address: string, method: string, body: Buffer): Promise<ServiceError | null> {
  const client = new Client(address, credentials.createInsecure());
  return new Promise<ServiceError | null>((resolve) => {
    client.makeUnaryRequest(
      method,
      (b: Buffer) => b,
      (b: Buffer) => b,
      body,
      new Metadata(),
      { deadline: Date.now() + 10_000 },
      (error) => resolve(error),
    );
  }).finally(() => client.close());
}

describe("control API requests that do not decode", () => {
  it("an integer past 2^53 or a truncated message: INVALID_ARGUMENT naming the cause, not INTERNAL; the engine serves on", async () => {
    using dir = tempDir("keelson-undecodable-");
    await using d = await startDaemon({ poolPath: path.join(dir.path, "pool.img"), poolSize: "256M", dir: dir.path });
    const create = "/keelson.v1.VolumeService/CreateVolume";
    const cases: Record<string, Buffer> = {
      "size_bytes 2^60": createVolumeRequest("big", 1n << 60n),
      truncated: createVolumeRequest("cut", 4096n).subarray(0, 4),
    };
    for (const [what, body] of Object.entries(cases)) {
      const error = await rawCall(d.grpcAddress, create, body);
      expect(error?.code, what).toBe(status.INVALID_ARGUMENT);
      expect(error?.metadata.get(ERROR_CODE_METADATA_KEY), what).toEqual(["INVALID_ARGUMENT"]);
      expect(error?.details, what).toMatch(/CreateVolume: the request does not decode/);
    }
    // The same message, well formed, works: the bytes above were refused for what they were.
    expect(await rawCall(d.grpcAddress, create, createVolumeRequest("ok", 4n * 1024n * 1024n))).toBeNull();
    await using c = createClient({ address: d.grpcAddress });
    expect((await c.listVolumes()).map((v) => v.name)).toEqual(["ok"]);
  }, 60_000);
});
