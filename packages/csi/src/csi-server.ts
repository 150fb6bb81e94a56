import fs from "node:fs";
import path from "node:path";
import { type GrpcObject, loadPackageDefinition, Server, ServerCredentials, type ServiceClientConstructor } from "@grpc/grpc-js";
import { loadSync } from "@grpc/proto-loader";
import { createClient, type KeelsonClient, KeelsonError } from "@keelson/sdk";
import { controllerService } from "./controller-service.js";
import { CSI_PROTO_FILE } from "./csi-proto.js";
import { identityService } from "./identity-service.js";
import { nodeService } from "./node-service.js";

/** Where the node plugin keeps what it staged, so that a restarted driver can unstage it. */
export const DEFAULT_STATE_DIR = "/var/lib/keelson-csi";

/** Which CSI services one keelson-csi process serves: the controller plugin, the node plugin, or both. */
export type CsiMode = "controller" | "node" | "all";

export interface CsiServerOptions {
  /** `unix:///path/to/csi.sock` (the only transport kubelet and the sidecars use). */
  endpoint: string;
  mode: CsiMode;
  /** This node's id (the engine's node id), for the node plugin. */
  nodeId: string;
  /** The engine's control API (`host:port` or `unix:/path`). */
  engineAddress: string;
  version: string;
  /** Where the node plugin records staged volumes (default {@link DEFAULT_STATE_DIR}). */
  stateDir?: string;
  /** An SDK client to use instead of one made from `engineAddress` (its TLS options). */
  engine?: KeelsonClient;
}

export interface StartedCsiServer extends AsyncDisposable {
  /** The unix socket path served. */
  socketPath: string;
  close(): Promise<void>;
}

/** The unix socket path of a CSI endpoint; INVALID_ARGUMENT for anything but `unix://`. */
export function socketPathOf(endpoint: string): string {
  const m = /^unix:\/\/(\/.+)$/.exec(endpoint) ?? /^unix:(\/.+)$/.exec(endpoint);
  if (!m?.[1]) {
    throw new KeelsonError({
      code: "INVALID_ARGUMENT",
      message: `endpoint: CSI drivers serve on a unix socket (unix:///path/to/csi.sock), got ${JSON.stringify(endpoint)}`,
    });
  }
  return m[1];
}

function csiServices(): GrpcObject {
  const definition = loadSync(CSI_PROTO_FILE, { keepCase: true, longs: String, enums: String, defaults: true, oneofs: true });
  const csi = loadPackageDefinition(definition).csi as GrpcObject;
  return csi.v1 as GrpcObject;
}

/** Serves the CSI services of `mode` on the endpoint's unix socket (a stale socket file is replaced). */
export async function startCsiServer(o: CsiServerOptions): Promise<StartedCsiServer> {
  const socketPath = socketPathOf(o.endpoint);
  const engine = o.engine ?? createClient({ address: o.engineAddress });
  const v1 = csiServices();
  const server = new Server();
  const service = (name: string) => (v1[name] as ServiceClientConstructor).service;
  server.addService(service("Identity"), identityService({ version: o.version, controller: o.mode !== "node", engine }));
  if (o.mode !== "node") server.addService(service("Controller"), controllerService(engine));
  if (o.mode !== "controller") {
    server.addService(service("Node"), nodeService({ nodeId: o.nodeId, stateDir: o.stateDir ?? DEFAULT_STATE_DIR, engine }));
  }
  fs.mkdirSync(path.dirname(socketPath), { recursive: true });
  fs.rmSync(socketPath, { force: true });
  await new Promise<void>((resolve, reject) =>
    server.bindAsync(`unix://${socketPath}`, ServerCredentials.createInsecure(), (error) => (error ? reject(error) : resolve())),
  );
  let closing: Promise<void> | null = null;
  const close = (): Promise<void> => {
    closing ??= new Promise<void>((resolve) => server.tryShutdown(() => resolve())).then(() => {
      if (!o.engine) engine.close();
      fs.rmSync(socketPath, { force: true });
    });
    return closing;
  };
  return { socketPath, close, [Symbol.asyncDispose]: close };
}
