import { type ChildProcess, spawn } from "node:child_process";
import fs from "node:fs";
import { createRequire } from "node:module";
import os from "node:os";
import path from "node:path";

const require = createRequire(import.meta.url);
const KEELSOND = path.join(path.dirname(require.resolve("@keelson/engine/package.json")), "dist", "cli", "keelsond.js");
const START_TIMEOUT_MS = 30_000;

/** A keelsond on loopback (ephemeral ports, a file-backed pool), as the CSI driver's engine. */
export interface TestEngine extends AsyncDisposable {
  grpcAddress: string;
  child: ChildProcess;
  stop(): Promise<void>;
}

function exited(child: ChildProcess, ms: number): Promise<void> {
  if (child.exitCode !== null || child.signalCode !== null) return Promise.resolve();
  return new Promise((resolve) => {
    const timer = setTimeout(resolve, ms);
    child.once("exit", () => {
      clearTimeout(timer);
      resolve();
    });
  });
}

export async function startEngine(poolSize = "256M"): Promise<TestEngine> {
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), "keelson-csi-engine-"));
  const ready = path.join(dir, "ready.json");
  const args = [KEELSOND, "--pool", path.join(dir, "pool.img"), "--pool-size", poolSize, "--grpc-listen", "127.0.0.1:0"];
  args.push(
    "--nbd-listen",
    "127.0.0.1:0",
    "--nbd-socket",
    path.join(dir, "nbd.sock"),
    "--ready-file",
    ready,
    "--node-id",
    "node1",
  );
  const child = spawn(process.execPath, args, { stdio: ["ignore", "ignore", "pipe"] });
  let log = "";
  child.stderr?.on("data", (d: Buffer) => {
    log += d.toString();
  });
  const started = Date.now();
  while (!fs.existsSync(ready)) {
    if (child.exitCode !== null || Date.now() - started > START_TIMEOUT_MS) {
      child.kill("SIGKILL");
      fs.rmSync(dir, { recursive: true, force: true });
      throw new Error(`keelsond did not start:\n${log}`);
    }
    await new Promise((r) => setTimeout(r, 25));
  }
  const { grpcAddress } = JSON.parse(fs.readFileSync(ready, "utf8")) as { grpcAddress: string };
  let stopping: Promise<void> | null = null;
  const stop = (): Promise<void> => {
    stopping ??= (async () => {
      child.kill("SIGTERM");
      await exited(child, 15_000);
      if (child.exitCode === null && child.signalCode === null) child.kill("SIGKILL");
      await exited(child, 5_000);
      fs.rmSync(dir, { recursive: true, force: true });
    })();
    return stopping;
  };
  return { grpcAddress, child, stop, [Symbol.asyncDispose]: stop };
}
