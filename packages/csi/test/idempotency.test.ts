// The spec: every call may be retried (a sidecar's deadline passed, the driver restarted), and the retry
// must get the answer the first got. Each Controller and Identity RPC, twice with the same arguments.

import { describe, expect, it } from "vitest";
import { type ControllerDriver, withControllerDriver } from "./helpers/controller-driver.js";

const MIB = 1024 * 1024;
const cap = { mount: { fs_type: "ext4" }, access_mode: { mode: "SINGLE_NODE_WRITER" } };

describe("keelson-csi: every RPC twice with the same arguments gives the same answer", () => {
  it("Identity and Controller, in the order a volume's life calls them", async () => {
    await withControllerDriver(async (d) => {
      const identity = d.client("Identity");
      const ctl = d.client("Controller");
      const calls: [ReturnType<ControllerDriver["client"]>, string, object][] = [
        [identity, "GetPluginInfo", {}],
        [identity, "GetPluginCapabilities", {}],
        [identity, "Probe", {}],
        [ctl, "ControllerGetCapabilities", {}],
        [
          ctl,
          "CreateVolume",
          {
            name: "pvc-twice",
            capacity_range: { required_bytes: String(16 * MIB) },
            volume_capabilities: [cap],
            parameters: { fsType: "ext4", readIopsLimit: "500" },
          },
        ],
        [ctl, "ValidateVolumeCapabilities", { volume_id: "pvc-twice", volume_capabilities: [cap] }],
        [ctl, "ControllerPublishVolume", { volume_id: "pvc-twice", node_id: "node1", volume_capability: cap, readonly: false }],
        [ctl, "CreateSnapshot", { source_volume_id: "pvc-twice", name: "snap-twice" }],
        [ctl, "ListSnapshots", { source_volume_id: "pvc-twice" }],
        [
          ctl,
          "CreateVolume",
          {
            name: "pvc-clone",
            volume_capabilities: [cap],
            volume_content_source: { snapshot: { snapshot_id: "pvc-twice@snap-twice" } },
          },
        ],
        [
          ctl,
          "ControllerExpandVolume",
          { volume_id: "pvc-twice", capacity_range: { required_bytes: String(32 * MIB) }, volume_capability: cap },
        ],
        [ctl, "ControllerModifyVolume", { volume_id: "pvc-twice", mutable_parameters: { readIopsLimit: "800" } }],
        [ctl, "ControllerGetVolume", { volume_id: "pvc-twice" }],
        [ctl, "ListVolumes", {}],
        [ctl, "GetCapacity", {}],
        [ctl, "ControllerUnpublishVolume", { volume_id: "pvc-twice", node_id: "node1" }],
        [ctl, "DeleteVolume", { volume_id: "pvc-clone" }],
        [ctl, "DeleteSnapshot", { snapshot_id: "pvc-twice@snap-twice" }],
        [ctl, "DeleteVolume", { volume_id: "pvc-twice" }],
      ];
      for (const [client, method, request] of calls) {
        const first = await client.call(method, request);
        const second = await client.call(method, request);
        // GetCapacity's free bytes may move with the pool's own metadata; everything else is exact.
        if (method === "GetCapacity") expect(Object.keys(second)).toEqual(Object.keys(first));
        else expect(second, `${method} twice`).toEqual(first);
      }
      expect((await ctl.call("ListVolumes", {})).entries).toEqual([]);
    });
  }, 90_000);
});
