import fs from "node:fs";
import os from "node:os";
import path from "node:path";
import { status } from "@grpc/grpc-js";
import { LocalCluster, type StartedLocalCluster } from "@keelson/engine";
import { describe, expect, it } from "vitest";
import { startCsiServer } from "../src/csi-server.js";
import { run } from "../src/host-tools.js";
import { csiClient } from "./helpers/csi-client.js";
import { isRootOrSay, mounts, unmountUnder } from "./helpers/host.js";

const MIB = 1024 * 1024;
const isRoot = isRootOrSay("the CSI lifecycle on a local cluster");

describe("keelson-csi on a 3-node local cluster, driven as kubelet and the sidecars would", () => {
  it.skipIf(!isRoot)(
    "create (3 replicas) -> publish -> stage (formats, mounts) -> publish -> files -> snapshot -> clone -> stage the clone -> the files are there -> expand -> unpublish, unstage, delete: nothing left mounted, attached or looped",
    async () => {
      const dir = fs.mkdtempSync(path.join(os.tmpdir(), "keelson-csi-life-"));
      let cluster: StartedLocalCluster | null = null;
      try {
        cluster = await LocalCluster.start({ nodes: 3, dir: path.join(dir, "cluster"), diskSizeBytes: 512 * MIB, leaseTtlS: 3 });
        const node1 = cluster.nodes[0];
        if (!node1) throw new Error("no node1");
        await using driver = await startCsiServer({
          endpoint: `unix://${path.join(dir, "csi.sock")}`,
          mode: "all",
          nodeId: "node1",
          stateDir: path.join(dir, "state"),
          engineAddress: node1.grpcAddress,
          version: "0.1.0",
        });
        const ctl = csiClient(driver.socketPath, "Controller");
        const node = csiClient(driver.socketPath, "Node");
        try {
          const cap = { mount: { fs_type: "ext4" }, access_mode: { mode: "SINGLE_NODE_WRITER" } };
          const created = (
            await ctl.call("CreateVolume", {
              name: "pvc-6f1c2a4e-0d1b-4c7e-8f3a-2b9d5e7c1a00",
              capacity_range: { required_bytes: String(64 * MIB) },
              volume_capabilities: [cap],
              parameters: { replicas: "3", fsType: "ext4" },
            })
          ).volume as { volume_id: string; volume_context: Record<string, string> };
          const id = created.volume_id;
          expect(created.volume_context.replicas).toBe("3");
          await ctl.call("ControllerPublishVolume", { volume_id: id, node_id: "node1", volume_capability: cap, readonly: false });
          const attached = await cluster.client(0).getAttachment({ name: id });
          expect(attached.replicas.map((r) => r.nodeId).sort()).toEqual(["node1", "node2", "node3"]);
          const stage = (v: string) => ({
            volume_id: v,
            staging_target_path: path.join(dir, "staging", v),
            volume_capability: cap,
            volume_context: { fsType: "ext4" },
          });
          const target = (v: string) => path.join(dir, "pods", v, "mount");
          await node.call("NodeStageVolume", stage(id));
          await node.call("NodePublishVolume", { ...stage(id), target_path: target(id), readonly: false });
          for (let i = 0; i < 8; i++) fs.writeFileSync(path.join(target(id), `file-${i}`), Buffer.alloc(MIB, i + 1));
          await run("sync", ["-f", target(id)]);
          const snap = (await ctl.call("CreateSnapshot", { source_volume_id: id, name: "snap-before-clone" })).snapshot as {
            snapshot_id: string;
          };
          const clone = (
            await ctl.call("CreateVolume", {
              name: "pvc-clone",
              volume_capabilities: [cap],
              parameters: { replicas: "3" },
              volume_content_source: { snapshot: { snapshot_id: snap.snapshot_id } },
            })
          ).volume as { volume_id: string };
          await ctl.call("ControllerPublishVolume", { volume_id: clone.volume_id, node_id: "node1", volume_capability: cap });
          await node.call("NodeStageVolume", stage(clone.volume_id));
          await node.call("NodePublishVolume", {
            ...stage(clone.volume_id),
            target_path: target(clone.volume_id),
            readonly: false,
          });
          for (let i = 0; i < 8; i++) {
            expect(fs.readFileSync(path.join(target(clone.volume_id), `file-${i}`)).equals(Buffer.alloc(MIB, i + 1))).toBe(true);
          }
          // Online expansion at the controller: the volume grows while it is published.
          const grown = await ctl.call("ControllerExpandVolume", {
            volume_id: id,
            capacity_range: { required_bytes: String(128 * MIB) },
            volume_capability: cap,
          });
          expect(grown.capacity_bytes).toBe(String(128 * MIB));
          expect((await cluster.client(0).getVolume({ name: id })).sizeBytes).toBe(128 * MIB);
          for (const v of [clone.volume_id, id]) {
            await node.call("NodeUnpublishVolume", { volume_id: v, target_path: target(v) });
            await node.call("NodeUnstageVolume", { volume_id: v, staging_target_path: stage(v).staging_target_path });
            await ctl.call("ControllerUnpublishVolume", { volume_id: v, node_id: "node1" });
          }
          // A one-replica volume in the cluster lives on node1's pool: published there without an attachment,
          // refused elsewhere, listed and read without one (these failed: the cluster's attachments were asked).
          const single = (
            await ctl.call("CreateVolume", {
              name: "pvc-single",
              volume_capabilities: [cap],
              capacity_range: { required_bytes: String(16 * MIB) },
            })
          ).volume as { volume_id: string; accessible_topology: unknown };
          expect(single.accessible_topology).toEqual([
            { segments: { "topology.csi.keelson.io/zone": "zone-1", "topology.csi.keelson.io/node": "node1" } },
          ]);
          const publishSingle = { volume_id: "pvc-single", volume_capability: cap, readonly: false };
          expect(await ctl.call("ControllerPublishVolume", { ...publishSingle, node_id: "node1" })).toEqual({
            publish_context: { readOnly: "false" },
          });
          expect(await ctl.code("ControllerPublishVolume", { ...publishSingle, node_id: "node2" })).toBe(
            status.FAILED_PRECONDITION,
          );
          expect(await ctl.call("ControllerGetVolume", { volume_id: "pvc-single" })).toMatchObject({
            status: { published_node_ids: [], volume_condition: { abnormal: false } },
          });
          const listed = (await ctl.call("ListVolumes", {})).entries as { volume: { volume_id: string } }[];
          expect(listed.map((e) => e.volume.volume_id)).toContain("pvc-single");
          await ctl.call("ControllerUnpublishVolume", { volume_id: "pvc-single", node_id: "node1" });
          await ctl.call("DeleteVolume", { volume_id: "pvc-single" });
          // replicated "true": one replica, but a cluster volume: no topology, published on a node by attaching it
          // there (node2 holds no replica of it: the controller's engine node1 does), unpublished by detaching.
          const oneReplica = (
            await ctl.call("CreateVolume", {
              name: "pvc-one-replica",
              volume_capabilities: [cap],
              capacity_range: { required_bytes: String(16 * MIB) },
              parameters: { replicated: "true" },
            })
          ).volume as { volume_id: string; accessible_topology: unknown };
          expect(oneReplica.accessible_topology).toEqual([]);
          expect((await cluster.client(1).getVolume({ name: "pvc-one-replica" })).replicas).toBe(1);
          const publishOne = { volume_id: "pvc-one-replica", volume_capability: cap, readonly: false };
          await ctl.call("ControllerPublishVolume", { ...publishOne, node_id: "node2" });
          const onNode2 = await cluster.client(1).getAttachment({ name: "pvc-one-replica" });
          expect(onNode2.replicas.map((r) => [r.nodeId, r.state])).toEqual([["node1", "healthy"]]);
          expect(await ctl.call("ControllerGetVolume", { volume_id: "pvc-one-replica" })).toMatchObject({
            status: { published_node_ids: ["node2"], volume_condition: { abnormal: false } },
          });
          await ctl.call("ControllerUnpublishVolume", { volume_id: "pvc-one-replica", node_id: "node2" });
          expect(await cluster.client(0).listAttachments({ name: "pvc-one-replica" })).toEqual([]);
          await ctl.call("DeleteVolume", { volume_id: "pvc-one-replica" });
          await ctl.call("DeleteVolume", { volume_id: clone.volume_id });
          await ctl.call("DeleteSnapshot", { snapshot_id: snap.snapshot_id });
          await ctl.call("DeleteVolume", { volume_id: id });
          expect(mounts()).not.toContain(path.join(dir, "staging"));
          expect(mounts()).not.toContain(path.join(dir, "pods"));
          expect(await run("losetup", ["--list", "--noheadings"])).not.toContain(path.join(dir, "state"));
          expect((await cluster.client(0).listVolumes()).map((v) => v.name)).toEqual([]);
        } finally {
          ctl.close();
          node.close();
        }
      } finally {
        await unmountUnder(dir, path.join(dir, "cluster"));
        await cluster?.stop();
        fs.rmSync(dir, { recursive: true, force: true });
      }
    },
    240_000,
  );
});
