import { type ChildProcess, spawn } from "node:child_process";
import fs from "node:fs";
import os from "node:os";
import path from "node:path";
import { fileURLToPath } from "node:url";
import { createClient, type KeelsonClient } from "@keelson/sdk";
import { waitExit } from "./process.js";

const KEELSOND = fileURLToPath(new URL("../../dist/cli/keelsond.js", import.meta.url));
const START_TIMEOUT_MS = 20_000;

/** A keelsond process started by a test; always stop it (tests use `await using`). */
export interface TestDaemon extends AsyncDisposable {
  readonly child: ChildProcess;
  readonly pid: number;
  readonly grpcAddress: string;
  readonly nbdAddress: string;
  readonly nbdSocket: string;
  /** `host:port` of Prometheus `/metrics`, "" unless started with `--metrics-listen`. */
  readonly metricsAddress: string;
  /** Log lines written so far (JSON, stderr). */
  log(): string;
  client(): KeelsonClient;
  /** nbd://host:port/name */
  uri(volume: string): string;
  /** SIGKILL, as a crash would. */
  kill9(): Promise<void>;
  /** SIGTERM and wait (clean shutdown with checkpoint). */
  stop(): Promise<void>;
}

/** Options of {@link startDaemon}. */
export interface StartDaemonOptions {
  poolPath: string;
  poolSize?: string;
  /** Directory for the ready file and unix socket; a fresh temp dir when omitted. */
  dir?: string;
  extraArgs?: string[];
}

/** Starts keelsond on loopback with ephemeral ports and waits until it serves. */
export async function startDaemon(options: StartDaemonOptions): Promise<TestDaemon> {
  const dir = options.dir ?? fs.mkdtempSync(path.join(os.tmpdir(), "keelsond-"));
  const ready = path.join(dir, `ready-${Date.now()}-${Math.random().toString(16).slice(2)}.json`);
  const socket = path.join(dir, "nbd.sock");
  const args = [KEELSOND, "--pool", options.poolPath, "--grpc-listen", "127.0.0.1:0", "--nbd-listen", "127.0.0.1:0"];
  args.push("--nbd-socket", socket, "--ready-file", ready, ...(options.poolSize ? ["--pool-size", options.poolSize] : []));
  const child = spawn(process.execPath, [...args, ...(options.extraArgs ?? [])], { stdio: ["ignore", "ignore", "pipe"] });
  let log = "";
  child.stderr?.on("data", (d: Buffer) => {
    log += d.toString();
  });
  const started = Date.now();
  while (!fs.existsSync(ready)) {
    if (child.exitCode !== null) throw new Error(`keelsond exited ${child.exitCode} before serving:\n${log}`);
    if (Date.now() - started > START_TIMEOUT_MS) {
      child.kill("SIGKILL");
      throw new Error(`keelsond did not become ready in ${START_TIMEOUT_MS} ms:\n${log}`);
    }
    await new Promise((r) => setTimeout(r, 25));
  }
  const info = JSON.parse(fs.readFileSync(ready, "utf8")) as {
    grpcAddress: string;
    nbdAddress: string;
    nbdSocket: string;
    metricsAddress: string;
  };
  fs.rmSync(ready, { force: true });
  const clients: KeelsonClient[] = [];
  const stop = async (): Promise<void> => {
    for (const c of clients) c.close();
    if (child.exitCode === null && child.signalCode === null) {
      child.kill("SIGTERM");
      await waitExit(child, 15_000);
      if (child.exitCode === null && child.signalCode === null) child.kill("SIGKILL");
      await waitExit(child);
    }
  };
  return {
    child,
    pid: child.pid as number,
    ...info,
    log: () => log,
    client: () => {
      const c = createClient({ address: info.grpcAddress });
      clients.push(c);
      return c;
    },
    uri: (volume) => `nbd://${info.nbdAddress}/${volume}`,
    kill9: async () => {
      child.kill("SIGKILL");
      await waitExit(child);
    },
    stop,
    [Symbol.asyncDispose]: stop,
  };
}

/** A fresh temp directory removed by the returned disposer. */
export function tempDir(prefix: string): { path: string } & Disposable {
  const p = fs.mkdtempSync(path.join(os.tmpdir(), prefix));
  return { path: p, [Symbol.dispose]: () => fs.rmSync(p, { recursive: true, force: true }) };
}
