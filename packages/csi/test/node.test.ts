import fs from "node:fs";
import os from "node:os";
import path from "node:path";
import { status } from "@grpc/grpc-js";
import { describe, expect, it } from "vitest";
import { startCsiServer } from "../src/csi-server.js";
import { run } from "../src/host-tools.js";
import { csiClient } from "./helpers/csi-client.js";
import { startEngine } from "./helpers/engine.js";
import { isRootOrSay, mounts, unmountUnder } from "./helpers/host.js";

const MIB = 1024 * 1024;
const isRoot = isRootOrSay("the CSI node path");

describe("keelson-csi Node over its unix socket: the node path for real", () => {
  it.skipIf(!isRoot)(
    "stage (nbdfuse + loop, mkfs on first use only, mount), publish (bind, read-only honoured), stats, unpublish, unstage: idempotent, and nothing left mounted, looped or running",
    async () => {
      const dir = fs.mkdtempSync(path.join(os.tmpdir(), "keelson-csi-node-"));
      const engine = await startEngine("1G");
      const stateDir = path.join(dir, "state");
      try {
        await using driver = await startCsiServer({
          endpoint: `unix://${path.join(dir, "csi.sock")}`,
          mode: "all",
          nodeId: "node1",
          stateDir,
          engineAddress: engine.grpcAddress,
          version: "0.1.0",
        });
        const ctl = csiClient(driver.socketPath, "Controller");
        const node = csiClient(driver.socketPath, "Node");
        try {
          const cap = { mount: { fs_type: "ext4" }, access_mode: { mode: "SINGLE_NODE_WRITER" } };
          await ctl.call("CreateVolume", {
            name: "data",
            capacity_range: { required_bytes: String(64 * MIB) },
            volume_capabilities: [cap],
          });
          await ctl.call("ControllerPublishVolume", { volume_id: "data", node_id: "node1", volume_capability: cap });
          const staging = path.join(dir, "staging", "data");
          const target = path.join(dir, "pods", "p1", "data");
          const ro = path.join(dir, "pods", "p2", "data");
          const stage = {
            volume_id: "data",
            staging_target_path: staging,
            volume_capability: cap,
            volume_context: { fsType: "ext4" },
          };
          await node.call("NodeStageVolume", stage);
          await node.call("NodeStageVolume", stage); // idempotent
          expect(mounts()).toContain(` ${staging} `);
          await node.call("NodePublishVolume", { ...stage, target_path: target, readonly: false });
          await node.call("NodePublishVolume", { ...stage, target_path: target, readonly: false });
          await node.call("NodePublishVolume", { ...stage, target_path: ro, readonly: true });
          fs.writeFileSync(path.join(target, "hello.txt"), "kept across stagings");
          expect(fs.readFileSync(path.join(ro, "hello.txt"), "utf8")).toBe("kept across stagings");
          expect(() => fs.writeFileSync(path.join(ro, "no.txt"), "x")).toThrow(/EROFS|read-only/);
          const stats = await node.call("NodeGetVolumeStats", { volume_id: "data", volume_path: target });
          const bytes = (stats.usage as { unit: string; total: string }[]).find((u) => u.unit === "BYTES");
          expect(Number(bytes?.total)).toBeGreaterThan(50 * MIB);
          expect(stats.volume_condition).toMatchObject({ abnormal: false });
          expect(await node.code("NodeGetVolumeStats", { volume_id: "data", volume_path: path.join(dir, "nope") })).toBe(
            status.NOT_FOUND,
          );
          for (const t of [target, ro]) {
            await node.call("NodeUnpublishVolume", { volume_id: "data", target_path: t });
            await node.call("NodeUnpublishVolume", { volume_id: "data", target_path: t });
          }
          await node.call("NodeUnstageVolume", { volume_id: "data", staging_target_path: staging });
          await node.call("NodeUnstageVolume", { volume_id: "data", staging_target_path: staging });
          expect(mounts()).not.toContain(dir);
          expect(await run("losetup", ["--list", "--noheadings"])).not.toContain(stateDir);
          // Staged again: the filesystem is not formatted again, the file is there.
          await node.call("NodeStageVolume", stage);
          await node.call("NodePublishVolume", { ...stage, target_path: target, readonly: false });
          expect(fs.readFileSync(path.join(target, "hello.txt"), "utf8")).toBe("kept across stagings");
          await node.call("NodeUnpublishVolume", { volume_id: "data", target_path: target });
          await node.call("NodeUnstageVolume", { volume_id: "data", staging_target_path: staging });
          // A raw block volume: the published target is the device, of the volume's size.
          const blockCap = { block: {}, access_mode: { mode: "SINGLE_NODE_WRITER" } };
          await ctl.call("CreateVolume", {
            name: "raw",
            capacity_range: { required_bytes: String(32 * MIB) },
            volume_capabilities: [blockCap],
          });
          const rawStage = {
            volume_id: "raw",
            staging_target_path: path.join(dir, "staging", "raw"),
            volume_capability: blockCap,
          };
          const rawTarget = path.join(dir, "pods", "p3", "raw");
          fs.mkdirSync(path.dirname(rawTarget), { recursive: true });
          await node.call("NodeStageVolume", rawStage);
          await node.call("NodePublishVolume", { ...rawStage, target_path: rawTarget, readonly: false });
          expect((await run("blockdev", ["--getsize64", rawTarget])).trim()).toBe(String(32 * MIB));
          // Unstaging while the device is still published would free a loop device a pod still holds.
          expect(
            await node.code("NodeUnstageVolume", { volume_id: "raw", staging_target_path: rawStage.staging_target_path }),
          ).toBe(status.FAILED_PRECONDITION);
          await node.call("NodeUnpublishVolume", { volume_id: "raw", target_path: rawTarget });
          await node.call("NodeUnstageVolume", { volume_id: "raw", staging_target_path: rawStage.staging_target_path });
          expect(mounts()).not.toContain(dir);
          expect(await run("losetup", ["--list", "--noheadings"])).not.toContain(stateDir);
          // Offline expansion: grown at the controller while unstaged, the device has the new size when staged
          // again, and the filesystem (64 MiB before) grows with it; NodeExpandVolume then finds it done.
          await ctl.call("ControllerExpandVolume", {
            volume_id: "data",
            capacity_range: { required_bytes: String(128 * MIB) },
            volume_capability: cap,
          });
          await node.call("NodeStageVolume", stage);
          const grown = await node.call("NodeExpandVolume", {
            volume_id: "data",
            volume_path: staging,
            staging_target_path: staging,
            capacity_range: { required_bytes: String(128 * MIB) },
            volume_capability: cap,
          });
          expect(grown.capacity_bytes).toBe(String(128 * MIB));
          const big = fs.statfsSync(staging);
          expect(big.blocks * big.bsize).toBeGreaterThan(110 * MIB);
          expect(fs.readFileSync(path.join(staging, "hello.txt"), "utf8")).toBe("kept across stagings");
          // A reader's staging is read-only (no journal replay, no mkfs): the file is there, nothing can be written.
          const roStaging = path.join(dir, "staging", "data-ro");
          await node.call("NodeUnstageVolume", { volume_id: "data", staging_target_path: staging });
          const readerCap = { mount: { fs_type: "ext4" }, access_mode: { mode: "MULTI_NODE_READER_ONLY" } };
          await node.call("NodeStageVolume", { ...stage, staging_target_path: roStaging, volume_capability: readerCap });
          expect(fs.readFileSync(path.join(roStaging, "hello.txt"), "utf8")).toBe("kept across stagings");
          expect(() => fs.writeFileSync(path.join(roStaging, "no.txt"), "x")).toThrow(/EROFS|read-only/);
          await node.call("NodeUnstageVolume", { volume_id: "data", staging_target_path: roStaging });
          expect(mounts()).not.toContain(dir);
          const info = await node.call("NodeGetInfo", {});
          expect(info).toMatchObject({ node_id: "node1", max_volumes_per_node: "64" });
          expect(await node.code("NodePublishVolume", { ...stage, target_path: target, readonly: false })).toBe(
            status.FAILED_PRECONDITION,
          );
          expect(await node.code("NodeStageVolume", { ...stage, staging_target_path: "relative/path" })).toBe(
            status.INVALID_ARGUMENT,
          );
        } finally {
          ctl.close();
          node.close();
        }
      } finally {
        // Whatever a failure left: mounts under dir, then devices, then the engine.
        await unmountUnder(dir);
        await engine.stop();
        fs.rmSync(dir, { recursive: true, force: true });
      }
    },
    120_000,
  );
});
