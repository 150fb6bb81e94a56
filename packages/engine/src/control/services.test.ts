import type { ServerUnaryCall, ServiceError, sendUnaryData } from "@grpc/grpc-js";
import { ERROR_CODE_METADATA_KEY, KeelsonError } from "@keelson/sdk";
import { describe, expect, it } from "vitest";
import type { ControlContext } from "./context.js";
import { snapshotService } from "./snapshot-service.js";
import { volumeService } from "./volume-service.js";

/** A context with nothing behind it: only calls refused before they reach the pool or the cluster can answer. */
const ctx = {
  pool: {},
  qosClasses: new Map(),
  membership: () => null,
  frontends: new Map(),
  log: { log: () => undefined },
} as unknown as ControlContext;

type Handler = (call: ServerUnaryCall<unknown, unknown>, callback: sendUnaryData<unknown>) => void;

/** The keelson code a handler answers `request` with ("ok" when it succeeds). */
function codeOf(handler: unknown, request: unknown): Promise<string> {
  return new Promise((resolve) =>
    (handler as Handler)({ request } as ServerUnaryCall<unknown, unknown>, (error) => {
      const wire = error as Partial<ServiceError> | null;
      resolve(wire ? String(wire.metadata?.get(ERROR_CODE_METADATA_KEY)[0] ?? `status ${wire.code}`) : "ok");
    }),
  );
}

describe("control services refuse an empty name with INVALID_ARGUMENT (a typed answer, never INTERNAL)", () => {
  it("VolumeService", async () => {
    const volumes = volumeService(ctx);
    const request = { name: "", snapshot: "s", sizeBytes: 1, replicas: 1, labels: {}, epoch: 1 };
    for (const [method, handler] of Object.entries(volumes)) {
      if (method === "listVolumes") continue; // takes no name
      expect(`${method}: ${await codeOf(handler, request)}`).toBe(`${method}: INVALID_ARGUMENT`);
    }
  });

  it("SnapshotService", async () => {
    const snapshots = snapshotService(ctx);
    for (const method of ["createSnapshot", "getSnapshot", "deleteSnapshot"] as const) {
      const request = { volume: "v", name: "", labels: {} };
      expect(`${method}: ${await codeOf(snapshots[method], request)}`).toBe(`${method}: INVALID_ARGUMENT`);
    }
  });
});

describe("a replicated create is validated before the cluster is asked", () => {
  it("a bad name, size or label is INVALID_ARGUMENT, and etcd (the membership) is never called", async () => {
    const asked: string[] = [];
    const unreachable = new Proxy(
      {},
      {
        get: (_target, prop) => {
          asked.push(String(prop));
          throw new KeelsonError({ code: "UNAVAILABLE", message: `the cluster was asked (${String(prop)})` });
        },
      },
    );
    const membership = { metadata: unreachable, peers: unreachable, nodes: () => unreachable, nodeId: "node1" };
    const volumes = volumeService({ ...ctx, membership: () => membership } as unknown as ControlContext);
    const good = { name: "db", sizeBytes: 1 << 20, replicas: 3, labels: {} };
    for (const bad of [
      { ...good, name: "Bad/Name" },
      { ...good, name: "a".repeat(64) },
      { ...good, name: "db@s1" },
      { ...good, sizeBytes: 1000 },
      { ...good, labels: { "": "x" } },
    ]) {
      expect(`${JSON.stringify(bad)}: ${await codeOf(volumes.createVolume, bad)}`).toBe(
        `${JSON.stringify(bad)}: INVALID_ARGUMENT`,
      );
    }
    expect(asked).toEqual([]);
  });
});

describe("on a cluster node, a copy of a replicated volume is no volume of the node's own", () => {
  it("a copy a delete left for the leader to remove is VOLUME_NOT_FOUND to GetVolume, DeleteVolume, ResizeVolume and SetVolumeQos, and ListVolumes leaves it out", async () => {
    const copy = { name: "db", sizeBytes: 1 << 20, record: { uid: "u1", epoch: 3, labels: { "keelson.io/replica-of": "db" } } };
    const missing = () => {
      throw new KeelsonError({ code: "VOLUME_NOT_FOUND", message: "no such volume" });
    };
    const pool = {
      getVolume: (name: string) => (name === "db" ? copy : missing()),
      findVolume: (name: string) => (name === "db" ? copy : undefined),
      listVolumes: () => [copy],
    };
    // No record in the cluster: the volume was deleted, and its record of leftover copies names this node.
    const leftover = { ref: { kind: "leftover", id: "db" }, value: { nodes: ["node3"] } };
    const metadata = {
      get: async (ref: { kind: string }) => (ref.kind === "leftover" ? leftover : null),
      list: async (kind: string) => (kind === "leftover" ? [leftover] : []),
    };
    const membership = { metadata, nodeId: "node3" };
    const volumes = volumeService({ ...ctx, pool, membership: () => membership } as unknown as ControlContext);
    for (const method of ["getVolume", "deleteVolume", "resizeVolume", "setVolumeQos"] as const) {
      const request = { name: "db", sizeBytes: 2 << 20, force: true, replicaOnly: false, qosClass: "", labels: {} };
      expect(`${method}: ${await codeOf(volumes[method], request)}`).toBe(`${method}: VOLUME_NOT_FOUND`);
    }
    const listed = await new Promise((resolve) =>
      (volumes.listVolumes as unknown as Handler)({ request: {} } as ServerUnaryCall<unknown, unknown>, (_e, value) =>
        resolve(value),
      ),
    );
    expect(listed).toEqual({ volumes: [] });
  });
});
