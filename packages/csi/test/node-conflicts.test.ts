// The node path under what kubelet really does: the same call with other arguments (the spec's
// ALREADY_EXISTS), the driver restarted while volumes are staged, and a raw block device checked by fio.

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
const isRoot = isRootOrSay("the CSI node path (conflicts, restart, raw block)");
const writer = (fsType: string) => ({ mount: { fs_type: fsType }, access_mode: { mode: "SINGLE_NODE_WRITER" } });
const blockCap = { block: {}, access_mode: { mode: "SINGLE_NODE_WRITER" } };

describe("keelson-csi Node: conflicting calls, a restart while staged, raw block", () => {
  it.skipIf(!isRoot)(
    "a stage or publish that differs from what is there is ALREADY_EXISTS; the driver restarted while staged stages and publishes again idempotently with the data intact; a raw block volume passes fio verify",
    async () => {
      const dir = fs.mkdtempSync(path.join(os.tmpdir(), "keelson-csi-conflicts-"));
      const engine = await startEngine("1G");
      const stateDir = path.join(dir, "state");
      const driverOptions = (n: number) => ({
        endpoint: `unix://${path.join(dir, `csi-${n}.sock`)}`,
        mode: "all" as const,
        nodeId: "node1",
        stateDir,
        engineAddress: engine.grpcAddress,
        version: "0.1.0",
      });
      try {
        const first = await startCsiServer(driverOptions(1));
        let ctl = csiClient(first.socketPath, "Controller");
        let node = csiClient(first.socketPath, "Node");
        const staging = path.join(dir, "staging", "data");
        const target = path.join(dir, "pods", "p1", "data");
        const stage = { volume_id: "data", staging_target_path: staging, volume_capability: writer("ext4") };
        try {
          await ctl.call("CreateVolume", {
            name: "data",
            capacity_range: { required_bytes: String(64 * MIB) },
            volume_capabilities: [writer("ext4")],
          });
          await ctl.call("ControllerPublishVolume", { volume_id: "data", node_id: "node1", volume_capability: writer("ext4") });
          await node.call("NodeStageVolume", stage);
          // Staged as ext4, writable: xfs there, or a reader's staging of the same volume, conflicts.
          expect(await node.code("NodeStageVolume", { ...stage, volume_capability: writer("xfs") })).toBe(status.ALREADY_EXISTS);
          const reader = { mount: { fs_type: "ext4" }, access_mode: { mode: "SINGLE_NODE_READER_ONLY" } };
          expect(
            await node.code("NodeStageVolume", {
              ...stage,
              staging_target_path: path.join(dir, "staging", "data-ro"),
              volume_capability: reader,
            }),
          ).toBe(status.ALREADY_EXISTS);
          await node.call("NodePublishVolume", { ...stage, target_path: target, readonly: false });
          expect(await node.code("NodePublishVolume", { ...stage, target_path: target, readonly: true })).toBe(
            status.ALREADY_EXISTS,
          );
          expect(
            await node.code("NodePublishVolume", { ...stage, target_path: target, readonly: false, volume_capability: blockCap }),
          ).toBe(status.ALREADY_EXISTS);
          await node.call("NodePublishVolume", { ...stage, target_path: target, readonly: false });
          fs.writeFileSync(path.join(target, "before-restart.bin"), Buffer.alloc(4 * MIB, 0x3c));
          await run("sync", ["-f", target]);
        } finally {
          ctl.close();
          node.close();
        }

        // The driver goes (a plugin pod restarted); its nbdfuse and loop device stay, as the mounts need them.
        await first.close();
        await using second = await startCsiServer(driverOptions(2));
        ctl = csiClient(second.socketPath, "Controller");
        node = csiClient(second.socketPath, "Node");
        try {
          await node.call("NodeStageVolume", stage);
          await node.call("NodePublishVolume", { ...stage, target_path: target, readonly: false });
          expect(fs.readFileSync(path.join(target, "before-restart.bin")).equals(Buffer.alloc(4 * MIB, 0x3c))).toBe(true);
          fs.writeFileSync(path.join(target, "after-restart.txt"), "written through the same device");
          await run("sync", ["-f", target]);
          await node.call("NodeUnpublishVolume", { volume_id: "data", target_path: target });
          await node.call("NodeUnstageVolume", { volume_id: "data", staging_target_path: staging });
          expect(await run("losetup", ["--list", "--noheadings"])).not.toContain(stateDir);
          await node.call("NodeStageVolume", stage);
          expect(fs.readFileSync(path.join(staging, "after-restart.txt"), "utf8")).toBe("written through the same device");
          await node.call("NodeUnstageVolume", { volume_id: "data", staging_target_path: staging });
          // A reader's staging published without readonly (Kubernetes' ReadOnlyMany): read-only all the same,
          // and the same call again is done, not ALREADY_EXISTS.
          const reader = { mount: { fs_type: "ext4" }, access_mode: { mode: "MULTI_NODE_READER_ONLY" } };
          const roStage = { ...stage, staging_target_path: path.join(dir, "staging", "data-ro"), volume_capability: reader };
          const roTarget = path.join(dir, "pods", "p3", "data");
          await node.call("NodeStageVolume", roStage);
          await node.call("NodePublishVolume", { ...roStage, target_path: roTarget, readonly: false });
          await node.call("NodePublishVolume", { ...roStage, target_path: roTarget, readonly: false });
          expect(() => fs.writeFileSync(path.join(roTarget, "no.txt"), "x")).toThrow(/EROFS|read-only/);
          await node.call("NodeUnpublishVolume", { volume_id: "data", target_path: roTarget });
          await node.call("NodeUnstageVolume", { volume_id: "data", staging_target_path: roStage.staging_target_path });

          // Raw block: the published device file, written and verified by fio (crc32c in every block).
          await ctl.call("CreateVolume", {
            name: "raw",
            capacity_range: { required_bytes: String(32 * MIB) },
            volume_capabilities: [blockCap],
          });
          await ctl.call("ControllerPublishVolume", { volume_id: "raw", node_id: "node1", volume_capability: blockCap });
          const rawStage = {
            volume_id: "raw",
            staging_target_path: path.join(dir, "staging", "raw"),
            volume_capability: blockCap,
          };
          const rawTarget = path.join(dir, "pods", "p2", "raw");
          fs.mkdirSync(path.dirname(rawTarget), { recursive: true });
          await node.call("NodeStageVolume", rawStage);
          await node.call("NodePublishVolume", { ...rawStage, target_path: rawTarget, readonly: false });
          await node.call("NodePublishVolume", { ...rawStage, target_path: rawTarget, readonly: false });
          const fio = await run("fio", [
            "--name=raw-verify",
            `--filename=${rawTarget}`,
            "--rw=randwrite",
            "--bs=4k",
            "--size=32m",
            "--ioengine=libaio",
            "--iodepth=16",
            "--direct=1",
            "--verify=crc32c",
            "--verify_fatal=1",
            "--do_verify=1",
            "--output-format=json",
          ]);
          const job = (JSON.parse(fio) as { jobs: { error: number; write: { io_bytes: number }; read: { io_bytes: number } }[] })
            .jobs[0];
          expect(job?.error).toBe(0);
          expect(job?.write.io_bytes).toBe(32 * MIB);
          // The verify pass reads back everything written.
          expect(job?.read.io_bytes).toBe(32 * MIB);
          await node.call("NodeUnpublishVolume", { volume_id: "raw", target_path: rawTarget });
          await node.call("NodeUnstageVolume", { volume_id: "raw", staging_target_path: rawStage.staging_target_path });
          expect(mounts()).not.toContain(dir);
          expect(await run("losetup", ["--list", "--noheadings"])).not.toContain(stateDir);
        } finally {
          ctl.close();
          node.close();
        }
      } finally {
        await unmountUnder(dir);
        await engine.stop();
        fs.rmSync(dir, { recursive: true, force: true });
      }
    },
    180_000,
  );
});
