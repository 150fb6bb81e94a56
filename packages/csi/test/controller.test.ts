import { status } from "@grpc/grpc-js";
import { createClient } from "@keelson/sdk";
import { describe, expect, it } from "vitest";
import { withControllerDriver } from "./helpers/controller-driver.js";
import type { csiClient } from "./helpers/csi-client.js";

const MIB = 1024 * 1024;
const mount = (mode = "SINGLE_NODE_WRITER", fs_type = "ext4") => ({ mount: { fs_type }, access_mode: { mode } });
const block = (mode = "SINGLE_NODE_WRITER") => ({ block: {}, access_mode: { mode } });

async function withDriver(fn: (c: ReturnType<typeof csiClient>, engineAddress: string) => Promise<void>): Promise<void> {
  await withControllerDriver((d) => fn(d.client("Controller"), d.engineAddress));
}

describe("keelson-csi Controller over its unix socket, on a real engine", () => {
  it("CreateVolume: sizes from the capacity range, idempotent by name, ALREADY_EXISTS for another size, the spec's codes for bad requests", async () => {
    await withDriver(async (c) => {
      const req = {
        name: "pvc-0b7c3e6a-1f2d-4c5b-9a8e-7d6c5b4a3f21",
        capacity_range: { required_bytes: String(10 * MIB + 1) },
        volume_capabilities: [mount()],
        parameters: { fsType: "xfs", "csi.storage.k8s.io/pvc/name": "data" },
      };
      const created = (await c.call("CreateVolume", req)).volume as Record<string, unknown>;
      expect(created).toMatchObject({
        volume_id: req.name,
        capacity_bytes: String(10 * MIB + 4096),
        volume_context: { fsType: "xfs", replicas: "1" },
      });
      // The sidecar retries with the same request: the same volume.
      expect(((await c.call("CreateVolume", req)).volume as Record<string, unknown>).volume_id).toBe(req.name);
      expect(await c.code("CreateVolume", { ...req, capacity_range: { required_bytes: String(20 * MIB) } })).toBe(
        status.ALREADY_EXISTS,
      );
      // A name keelson does not take maps to a stable id of its own.
      const odd = (await c.call("CreateVolume", { ...req, name: "Data Volume #1" })).volume as Record<string, unknown>;
      expect(odd.volume_id).toMatch(/^csi-[0-9a-f]{40}$/);
      expect(
        ((await c.call("CreateVolume", { ...req, name: "Data Volume #1" })).volume as Record<string, unknown>).volume_id,
      ).toBe(odd.volume_id);
      // Default size without a range.
      const dflt = (await c.call("CreateVolume", { name: "plain", volume_capabilities: [block()] })).volume as Record<
        string,
        unknown
      >;
      expect(dflt.capacity_bytes).toBe(String(1024 * MIB));
      expect(await c.code("CreateVolume", { ...req, name: "" })).toBe(status.INVALID_ARGUMENT);
      expect(await c.code("CreateVolume", { ...req, name: "nocaps", volume_capabilities: [] })).toBe(status.INVALID_ARGUMENT);
      expect(await c.code("CreateVolume", { ...req, name: "rwx", volume_capabilities: [mount("MULTI_NODE_MULTI_WRITER")] })).toBe(
        status.INVALID_ARGUMENT,
      );
      expect(
        await c.code("CreateVolume", { ...req, name: "btrfs", volume_capabilities: [mount("SINGLE_NODE_WRITER", "btrfs")] }),
      ).toBe(status.INVALID_ARGUMENT);
      expect(await c.code("CreateVolume", { ...req, name: "typo", parameters: { replica: "3" } })).toBe(status.INVALID_ARGUMENT);
      expect(await c.code("CreateVolume", { ...req, name: "rep-yes", parameters: { replicated: "yes" } })).toBe(
        status.INVALID_ARGUMENT,
      );
      // A cluster volume needs a cluster: this engine has none, and makes no plain volume instead.
      expect(await c.code("CreateVolume", { ...req, name: "rep-one", parameters: { replicated: "true" } })).toBe(
        status.INVALID_ARGUMENT,
      );
      expect(await c.code("ControllerGetVolume", { volume_id: "rep-one" })).toBe(status.NOT_FOUND);
      expect(await c.code("CreateVolume", { ...req, name: "enc", parameters: { encryption: "true" } })).toBe(
        status.INVALID_ARGUMENT,
      );
      expect(
        await c.code("CreateVolume", { ...req, name: "range", capacity_range: { required_bytes: "5000", limit_bytes: "6000" } }),
      ).toBe(status.OUT_OF_RANGE);
      expect(
        await c.code("CreateVolume", { ...req, name: "range2", capacity_range: { required_bytes: "8192", limit_bytes: "4096" } }),
      ).toBe(status.INVALID_ARGUMENT);
      // A one-replica volume lives on the engine's pool: reachable from that node only, and refused where the
      // CO's requirements exclude the node (RESOURCE_EXHAUSTED, the spec's "unable to provision in accessible_topology").
      const here = { segments: { "topology.csi.keelson.io/zone": "", "topology.csi.keelson.io/node": "node1" } };
      expect(created.accessible_topology).toEqual([here]);
      const elsewhere = { segments: { "topology.csi.keelson.io/node": "node7" } };
      expect(
        await c.code("CreateVolume", {
          ...req,
          name: "pinned-away",
          accessibility_requirements: { requisite: [elsewhere], preferred: [elsewhere] },
        }),
      ).toBe(status.RESOURCE_EXHAUSTED);
      const allowed = await c.call("CreateVolume", {
        ...req,
        name: "pinned-here",
        accessibility_requirements: { requisite: [elsewhere, here], preferred: [elsewhere] },
      });
      expect((allowed.volume as Record<string, unknown>).accessible_topology).toEqual([here]);
      await c.call("DeleteVolume", { volume_id: "pinned-here" });
      // Nothing was created by the refused requests.
      const listed = (await c.call("ListVolumes", {})).entries as { volume: { volume_id: string } }[];
      expect(listed.map((e) => e.volume.volume_id).sort()).toEqual([req.name, odd.volume_id, "plain"].sort());
    });
  }, 90_000);

  it("ValidateVolumeCapabilities, ListVolumes pages, expansion, capacity, snapshots and clones, publication on a single engine, idempotent deletes", async () => {
    await withDriver(async (c, engineAddress) => {
      for (const name of ["v1", "v2", "v3", "v4", "v5"]) {
        await c.call("CreateVolume", {
          name,
          capacity_range: { required_bytes: String(8 * MIB) },
          volume_capabilities: [mount()],
        });
      }
      const ok = await c.call("ValidateVolumeCapabilities", {
        volume_id: "v1",
        volume_capabilities: [mount("SINGLE_NODE_READER_ONLY")],
      });
      expect(ok.confirmed).not.toBeNull();
      const no = await c.call("ValidateVolumeCapabilities", {
        volume_id: "v1",
        volume_capabilities: [mount("MULTI_NODE_MULTI_WRITER")],
      });
      expect(no.confirmed).toBeNull();
      expect(no.message).toMatch(/MULTI_NODE_MULTI_WRITER is not supported/);
      expect(await c.code("ValidateVolumeCapabilities", { volume_id: "nope", volume_capabilities: [mount()] })).toBe(
        status.NOT_FOUND,
      );
      // Pages of 2: v1 v2 | v3 v4 | v5; a token never given is ABORTED.
      const pages: string[][] = [];
      let token = "";
      do {
        const res = await c.call("ListVolumes", { max_entries: 2, starting_token: token });
        pages.push((res.entries as { volume: { volume_id: string } }[]).map((e) => e.volume.volume_id));
        token = res.next_token as string;
      } while (token !== "");
      expect(pages).toEqual([["v1", "v2"], ["v3", "v4"], ["v5"]]);
      expect(await c.code("ListVolumes", { starting_token: "99" })).toBe(status.ABORTED);
      // Expansion: rounded up to 4 KiB; the filesystem grows on the node.
      const grown = await c.call("ControllerExpandVolume", {
        volume_id: "v1",
        capacity_range: { required_bytes: String(16 * MIB + 1) },
        volume_capability: mount(),
      });
      expect(grown).toEqual({ capacity_bytes: String(16 * MIB + 4096), node_expansion_required: true });
      expect(await c.code("ControllerExpandVolume", { volume_id: "nope", capacity_range: { required_bytes: "4096" } })).toBe(
        status.NOT_FOUND,
      );
      expect(Number((await c.call("GetCapacity", {})).available_capacity)).toBeGreaterThan(0);
      // Snapshots: ids are VOLUME@SNAPSHOT; a name is unique across volumes; clones from snapshots and volumes.
      const snap = (await c.call("CreateSnapshot", { source_volume_id: "v2", name: "snap-1" })).snapshot as Record<
        string,
        unknown
      >;
      expect(snap).toMatchObject({
        snapshot_id: "v2@snap-1",
        source_volume_id: "v2",
        ready_to_use: true,
        size_bytes: String(8 * MIB),
      });
      expect(
        ((await c.call("CreateSnapshot", { source_volume_id: "v2", name: "snap-1" })).snapshot as Record<string, unknown>)
          .snapshot_id,
      ).toBe("v2@snap-1");
      expect(await c.code("CreateSnapshot", { source_volume_id: "v3", name: "snap-1" })).toBe(status.ALREADY_EXISTS);
      expect(await c.code("CreateSnapshot", { source_volume_id: "nope", name: "snap-2" })).toBe(status.NOT_FOUND);
      const listed = (await c.call("ListSnapshots", { source_volume_id: "v2" })).entries as {
        snapshot: { snapshot_id: string };
      }[];
      expect(listed.map((e) => e.snapshot.snapshot_id)).toEqual(["v2@snap-1"]);
      expect(((await c.call("ListSnapshots", { snapshot_id: "v9@none" })).entries as unknown[]).length).toBe(0);
      const clone = (
        await c.call("CreateVolume", {
          name: "clone-of-snap",
          volume_capabilities: [mount()],
          volume_content_source: { snapshot: { snapshot_id: "v2@snap-1" } },
        })
      ).volume as Record<string, unknown>;
      expect(clone).toMatchObject({
        capacity_bytes: String(8 * MIB),
        content_source: { snapshot: { snapshot_id: "v2@snap-1" } },
      });
      const clone2 = (
        await c.call("CreateVolume", {
          name: "clone-of-vol",
          capacity_range: { required_bytes: String(8 * MIB) },
          volume_capabilities: [mount()],
          volume_content_source: { volume: { volume_id: "v3" } },
        })
      ).volume as Record<string, unknown>;
      expect(clone2.content_source).toMatchObject({ volume: { volume_id: "v3" } });
      // A single engine serves its volumes without attachments: publication checks the volume and returns.
      expect(
        await c.call("ControllerPublishVolume", {
          volume_id: "v4",
          node_id: "node1",
          volume_capability: mount(),
          readonly: false,
        }),
      ).toEqual({ publish_context: { readOnly: "false" } });
      expect(await c.code("ControllerPublishVolume", { volume_id: "nope", node_id: "node1", volume_capability: mount() })).toBe(
        status.NOT_FOUND,
      );
      expect(await c.code("ControllerUnpublishVolume", { volume_id: "v4", node_id: "node1" })).toBe("OK");
      // Deletes are idempotent.
      expect(await c.code("DeleteSnapshot", { snapshot_id: "v2@snap-1" })).toBe("OK");
      expect(await c.code("DeleteSnapshot", { snapshot_id: "v2@snap-1" })).toBe("OK");
      // An id the driver never gave names nothing: deleting it succeeds, listing it finds nothing (csi-sanity's fake ids).
      expect(await c.code("DeleteSnapshot", { snapshot_id: "reallyfakesnapshotid" })).toBe("OK");
      expect((await c.call("ListSnapshots", { snapshot_id: "reallyfakesnapshotid" })).entries).toEqual([]);
      expect(await c.code("DeleteSnapshot", { snapshot_id: "" })).toBe(status.INVALID_ARGUMENT);
      expect(await c.code("ControllerPublishVolume", { volume_id: "v4", node_id: "node9", volume_capability: mount() })).toBe(
        status.NOT_FOUND,
      );
      expect(await c.code("DeleteVolume", { volume_id: "v5" })).toBe("OK");
      expect(await c.code("DeleteVolume", { volume_id: "v5" })).toBe("OK");
      // ControllerGetVolume: the volume, where it is published, its condition.
      expect(await c.call("ControllerGetVolume", { volume_id: "v1" })).toMatchObject({
        volume: { volume_id: "v1", capacity_bytes: String(16 * MIB + 4096) },
        status: { published_node_ids: [], volume_condition: { abnormal: false } },
      });
      expect(await c.code("ControllerGetVolume", { volume_id: "nope" })).toBe(status.NOT_FOUND);
      // ControllerModifyVolume (a VolumeAttributesClass): QoS changes live; other parameters cannot change.
      expect(
        await c.code("ControllerModifyVolume", { volume_id: "v1", mutable_parameters: { readIopsLimit: "1k", weight: "3" } }),
      ).toBe("OK");
      await using sdk = createClient({ address: engineAddress });
      expect((await sdk.getVolume({ name: "v1" })).qos).toMatchObject({ limits: { readIops: { rate: 1000 } }, weight: 3 });
      expect(await c.code("ControllerModifyVolume", { volume_id: "v1", mutable_parameters: { replicas: "3" } })).toBe(
        status.INVALID_ARGUMENT,
      );
      expect(await c.code("ControllerModifyVolume", { volume_id: "v1", mutable_parameters: { readIopsLimit: "fast" } })).toBe(
        status.INVALID_ARGUMENT,
      );
      const caps = (await c.call("ControllerGetCapabilities", {})).capabilities as { rpc: { type: string } }[];
      expect(caps.map((x) => x.rpc.type)).toContain("CREATE_DELETE_VOLUME");
    });
  }, 90_000);
});
