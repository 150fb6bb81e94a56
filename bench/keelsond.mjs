// One keelsond for a bench script: a fresh file pool in a temporary directory, gRPC and NBD on
// loopback ports the kernel picks. Stopped (and its directory removed) by `stop`.
import { spawn } from "node:child_process";
import fs from "node:fs";
import os from "node:os";
import path from "node:path";
import { createClient } from "@keelson/sdk";
import { packageBin } from "./workspace.mjs";

const sleep = (ms) => new Promise((r) => setTimeout(r, ms));

/**
 * Starts keelsond on a new pool of `poolSize` (keelsond's syntax: "8G"); resolves once it is ready
 * with its gRPC client, an nbd:// URI maker and `stop`. `args` are more keelsond flags.
 */
export async function startKeelsond({ poolSize, args = [], prefix = "keelson-bench-" }) {
  const keelsond = packageBin("@keelson/engine", "keelsond");
  if (!fs.existsSync(keelsond)) throw new Error(`${keelsond} is missing: run npm run build first`);
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), prefix));
  const ready = path.join(dir, "ready.json");
  const child = spawn(
    process.execPath,
    [keelsond, "--pool", path.join(dir, "pool.img"), "--pool-size", poolSize, "--grpc-listen", "127.0.0.1:0"].concat(
      ["--nbd-listen", "127.0.0.1:0", "--ready-file", ready],
      args,
    ),
    { stdio: ["ignore", "ignore", "ignore"] },
  );
  const exited = new Promise((r) => child.once("close", r));
  let client = null;
  const stop = async () => {
    client?.close();
    if (child.exitCode === null && child.signalCode === null) child.kill("SIGTERM");
    await exited;
    fs.rmSync(dir, { recursive: true, force: true });
  };
  try {
    for (let i = 0; i < 600 && !fs.existsSync(ready) && child.exitCode === null; i++) await sleep(50);
    if (!fs.existsSync(ready)) throw new Error("keelsond did not become ready in 30 s");
    const info = JSON.parse(fs.readFileSync(ready, "utf8"));
    client = createClient({ address: info.grpcAddress, defaultTimeoutMs: 600_000 });
    const uri = (name) => `nbd://${info.nbdAddress}/${encodeURIComponent(name)}`;
    return { info, client, uri, pid: child.pid, stop };
  } catch (error) {
    await stop();
    throw error;
  }
}
