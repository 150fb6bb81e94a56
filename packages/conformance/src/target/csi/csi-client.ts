// A CSI client as kubelet and the sidecars are: the published csi.proto, real gRPC on the
// driver's unix socket, every call bounded, every failure a ConformanceError naming the call.

import {
  type Client,
  credentials,
  type GrpcObject,
  loadPackageDefinition,
  type ServiceClientConstructor,
  type ServiceError,
  status,
} from "@grpc/grpc-js";
import { loadSync } from "@grpc/proto-loader";
import { CSI_PROTO_FILE } from "@keelson/csi";
import { ConformanceError, type ConformanceErrorCode } from "../../errors.js";

/** A decoded CSI reply: proto-loader's plain objects (enums as names, 64-bit integers as strings). */
export type CsiReply = Record<string, unknown>;

export type CsiService = "Identity" | "Controller" | "Node";

/** Longest one CSI call may take: the external-provisioner's default timeout is 10 s; node calls format and mount. */
export const CSI_CALL_TIMEOUT_MS = 120_000;

/** One CSI call failed: its gRPC code (for the spec's meanings) and the driver's message. */
export class CsiCallError extends ConformanceError {
  readonly grpcCode: number;

  constructor(method: string, error: ServiceError) {
    super({
      code: conformanceCodeOf(error.code),
      message: `CSI ${method}: ${status[error.code] ?? error.code}: ${error.details}`,
      cause: error,
    });
    this.grpcCode = error.code;
  }
}

function conformanceCodeOf(code: number): ConformanceErrorCode {
  if (code === status.NOT_FOUND) return "NOT_FOUND";
  if (code === status.UNIMPLEMENTED) return "NOT_SUPPORTED";
  if (code === status.CANCELLED) return "CANCELLED";
  return "TARGET_FAILED";
}

/** The three CSI services of one driver socket. */
export class CsiClient {
  readonly endpoint: string;
  readonly #clients: Record<CsiService, Client & Record<string, unknown>>;

  constructor(endpoint: string) {
    if (!endpoint.startsWith("unix://")) {
      throw new ConformanceError({
        code: "INVALID_ARGUMENT",
        message: `--endpoint ${endpoint}: a unix:///path/csi.sock is needed`,
      });
    }
    this.endpoint = endpoint;
    const def = loadSync(CSI_PROTO_FILE, { keepCase: true, longs: String, enums: String, defaults: true, oneofs: true });
    const v1 = (loadPackageDefinition(def).csi as GrpcObject).v1 as GrpcObject;
    const make = (service: CsiService) => {
      const Ctor = v1[service] as ServiceClientConstructor;
      return new Ctor(endpoint, credentials.createInsecure()) as Client & Record<string, unknown>;
    };
    this.#clients = { Identity: make("Identity"), Controller: make("Controller"), Node: make("Node") };
  }

  /** Calls `method` of `service`; rejects with a {@link CsiCallError}. */
  call(service: CsiService, method: string, request: object = {}, timeoutMs = CSI_CALL_TIMEOUT_MS): Promise<CsiReply> {
    const client = this.#clients[service];
    const fn = client[method];
    if (typeof fn !== "function") {
      return Promise.reject(new ConformanceError({ code: "INTERNAL", message: `csi.proto has no ${service}.${method}` }));
    }
    return new Promise<CsiReply>((resolve, reject) => {
      (fn as (r: object, o: { deadline: number }, cb: (e: ServiceError | null, res: CsiReply) => void) => void).call(
        client,
        request,
        { deadline: Date.now() + timeoutMs },
        (error, reply) => (error ? reject(new CsiCallError(`${service}.${method}`, error)) : resolve(reply)),
      );
    });
  }

  close(): void {
    for (const c of Object.values(this.#clients)) c.close();
  }
}

/** The capability names a `*GetCapabilities` reply lists (the `rpc.type` of each entry). */
export function capabilityTypes(reply: CsiReply): Set<string> {
  const out = new Set<string>();
  const list = (reply.capabilities ?? []) as { rpc?: { type?: string } | null; service?: { type?: string } | null }[];
  for (const c of list) {
    const type = c.rpc?.type ?? c.service?.type;
    if (type) out.add(type);
  }
  return out;
}
