import fs from "node:fs";
import os from "node:os";
import path from "node:path";
import { startCsiServer } from "../../src/csi-server.js";
import { csiClient } from "./csi-client.js";
import { startEngine } from "./engine.js";

/** What {@link withControllerDriver} hands the test: the driver's socket and the engine behind it. */
export interface ControllerDriver {
  socketPath: string;
  engineAddress: string;
  /** A client of one service on the driver's socket, closed when the test's function ends. */
  client(service: "Identity" | "Controller"): ReturnType<typeof csiClient>;
}

/** Runs `fn` against keelson-csi in controller mode over a single engine (a 2 GiB thin pool), then removes both. */
export async function withControllerDriver(fn: (d: ControllerDriver) => Promise<void>): Promise<void> {
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), "keelson-csi-ctl-"));
  // Thin: the default 1 GiB volume fits under the pool's over-commit limit.
  const engine = await startEngine("2G");
  const clients: ReturnType<typeof csiClient>[] = [];
  try {
    await using driver = await startCsiServer({
      endpoint: `unix://${path.join(dir, "csi.sock")}`,
      mode: "controller",
      nodeId: "node1",
      engineAddress: engine.grpcAddress,
      version: "0.1.0",
    });
    await fn({
      socketPath: driver.socketPath,
      engineAddress: engine.grpcAddress,
      client: (service) => {
        const c = csiClient(driver.socketPath, service);
        clients.push(c);
        return c;
      },
    });
  } finally {
    for (const c of clients) c.close();
    await engine.stop();
    fs.rmSync(dir, { recursive: true, force: true });
  }
}
