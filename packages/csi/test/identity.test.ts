import fs from "node:fs";
import os from "node:os";
import path from "node:path";
import { describe, expect, it } from "vitest";
import { startCsiServer } from "../src/csi-server.js";
import { DRIVER_NAME } from "../src/identity-service.js";
import { csiClient } from "./helpers/csi-client.js";
import { startEngine } from "./helpers/engine.js";

describe("keelson-csi Identity over its unix socket", () => {
  it("GetPluginInfo names csi.keelson.io and its version; capabilities follow the mode; Probe is ready only while the engine answers", async () => {
    const dir = fs.mkdtempSync(path.join(os.tmpdir(), "keelson-csi-"));
    const engine = await startEngine();
    try {
      const endpoint = `unix://${path.join(dir, "controller", "csi.sock")}`;
      await using controller = await startCsiServer({
        endpoint,
        mode: "all",
        nodeId: "node1",
        stateDir: path.join(dir, "state"),
        engineAddress: engine.grpcAddress,
        version: "0.1.0",
      });
      const c = csiClient(controller.socketPath, "Identity");
      try {
        expect(await c.call("GetPluginInfo")).toMatchObject({ name: DRIVER_NAME, vendor_version: "0.1.0" });
        const caps = (await c.call("GetPluginCapabilities")).capabilities as Record<string, { type: string }>[];
        expect(caps.map((x) => `${x.type}:${(x.service ?? x.volume_expansion)?.type}`)).toEqual([
          "service:CONTROLLER_SERVICE",
          "service:VOLUME_ACCESSIBILITY_CONSTRAINTS",
          "volume_expansion:OFFLINE",
        ]);
        expect(await c.call("Probe")).toMatchObject({ ready: { value: true } });
        await engine.stop();
        expect(await c.call("Probe")).toMatchObject({ ready: { value: false } });
      } finally {
        c.close();
      }
      // A node-only plugin offers no Controller service.
      await using node = await startCsiServer({
        endpoint: `unix://${path.join(dir, "node", "csi.sock")}`,
        mode: "node",
        nodeId: "node1",
        stateDir: path.join(dir, "state"),
        engineAddress: engine.grpcAddress,
        version: "0.1.0",
      });
      const n = csiClient(node.socketPath, "Identity");
      try {
        const caps = (await n.call("GetPluginCapabilities")).capabilities as Record<string, unknown>[];
        expect(caps.map((x) => x.type)).toEqual(["volume_expansion"]);
      } finally {
        n.close();
      }
    } finally {
      await engine.stop();
      fs.rmSync(dir, { recursive: true, force: true });
    }
  }, 60_000);

  it("an endpoint that is not a unix socket is refused with INVALID_ARGUMENT", async () => {
    await expect(
      startCsiServer({ endpoint: "tcp://127.0.0.1:9000", mode: "all", nodeId: "n", engineAddress: "127.0.0.1:1", version: "0" }),
    ).rejects.toMatchObject({ code: "INVALID_ARGUMENT" });
  });
});
