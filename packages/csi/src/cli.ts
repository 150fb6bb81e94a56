#!/usr/bin/env node
import fs from "node:fs";
import os from "node:os";
import { parseArgs } from "node:util";
import { credentials } from "@grpc/grpc-js";
import { createClient, isKeelsonError, KeelsonError } from "@keelson/sdk";
import { messageOf } from "./csi-errors.js";
import { type CsiMode, DEFAULT_STATE_DIR, startCsiServer } from "./csi-server.js";

const VERSION = (JSON.parse(fs.readFileSync(new URL("../package.json", import.meta.url), "utf8")) as { version: string }).version;

const USAGE = `keelson-csi: the keelson CSI driver

  --endpoint URI     the CSI socket, unix:///csi/csi.sock (default; CSI_ENDPOINT when set)
  --mode MODE        controller | node | all (default all)
  --node-id ID       this node's id, the engine's node id (default the host name)
  --engine ADDR      the engine's control API, host:port or unix:/path (default 127.0.0.1:7420)
  --state-dir DIR    where staged volumes are recorded (default /var/lib/keelson-csi)
  --tls-ca FILE      CA of the engine's certificate (TLS to the engine)
  --tls-cert FILE    this driver's client certificate (mutual TLS)
  --tls-key FILE     its key
`;

function log(level: string, msg: string, fields: Record<string, unknown> = {}): void {
  process.stderr.write(
    `${JSON.stringify({ time: new Date().toISOString(), level, component: "keelson-csi", msg, ...fields })}\n`,
  );
}

function mode(value: string): CsiMode {
  if (value === "controller" || value === "node" || value === "all") return value;
  throw new KeelsonError({ code: "INVALID_ARGUMENT", message: `--mode: controller, node or all, got ${JSON.stringify(value)}` });
}

function engineCredentials(ca?: string, cert?: string, key?: string) {
  if (!ca && !cert && !key) return undefined;
  if (!ca || (cert === undefined) !== (key === undefined)) {
    throw new KeelsonError({
      code: "INVALID_ARGUMENT",
      message: "TLS to the engine needs --tls-ca, and --tls-cert with --tls-key or neither",
    });
  }
  const read = (file: string) => fs.readFileSync(file);
  return credentials.createSsl(read(ca), key ? read(key) : null, cert ? read(cert) : null);
}

async function main(): Promise<void> {
  const { values } = parseArgs({
    options: {
      endpoint: { type: "string", default: process.env.CSI_ENDPOINT ?? "unix:///csi/csi.sock" },
      mode: { type: "string", default: "all" },
      "node-id": { type: "string", default: os.hostname() },
      engine: { type: "string", default: "127.0.0.1:7420" },
      "state-dir": { type: "string", default: DEFAULT_STATE_DIR },
      "tls-ca": { type: "string" },
      "tls-cert": { type: "string" },
      "tls-key": { type: "string" },
      help: { type: "boolean", default: false },
    },
    strict: true,
  });
  if (values.help) {
    process.stdout.write(USAGE);
    return;
  }
  const tls = engineCredentials(values["tls-ca"], values["tls-cert"], values["tls-key"]);
  const engine = createClient({ address: values.engine, ...(tls ? { credentials: tls } : {}) });
  const server = await startCsiServer({
    endpoint: values.endpoint,
    mode: mode(values.mode),
    nodeId: values["node-id"],
    engineAddress: values.engine,
    version: VERSION,
    engine,
    stateDir: values["state-dir"],
  });
  log("info", "keelson-csi serving", {
    endpoint: values.endpoint,
    mode: values.mode,
    nodeId: values["node-id"],
    engine: values.engine,
  });
  const stop = () => {
    void server.close().then(() => {
      engine.close();
      log("info", "keelson-csi stopped");
    });
  };
  process.once("SIGTERM", stop);
  process.once("SIGINT", stop);
}

main().catch((error: unknown) => {
  const code = isKeelsonError(error) ? error.code : "INTERNAL";
  log("error", "keelson-csi failed to start", { code, error: messageOf(error) });
  process.exitCode = 1;
});
