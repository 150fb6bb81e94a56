import {
  credentials,
  type GrpcObject,
  loadPackageDefinition,
  type ServiceClientConstructor,
  type ServiceError,
} from "@grpc/grpc-js";
import { loadSync } from "@grpc/proto-loader";
import { CSI_PROTO_FILE } from "../../src/csi-proto.js";

export type CsiReply = Record<string, unknown>;

/** A client of one CSI service on a driver's unix socket, made as a sidecar makes it (the same csi.proto, real gRPC). */
export interface CsiTestClient {
  call(method: string, req?: object): Promise<CsiReply>;
  /** The call's gRPC status code, or "OK". */
  code(method: string, req?: object): Promise<number | "OK">;
  close(): void;
}

export function csiClient(socketPath: string, service: "Identity" | "Controller" | "Node"): CsiTestClient {
  const def = loadSync(CSI_PROTO_FILE, { keepCase: true, longs: String, enums: String, defaults: true, oneofs: true });
  const v1 = (loadPackageDefinition(def).csi as GrpcObject).v1 as GrpcObject;
  const Client = v1[service] as ServiceClientConstructor;
  const client = new Client(`unix://${socketPath}`, credentials.createInsecure());
  const call = (method: string, req: object = {}) =>
    new Promise<CsiReply>((resolve, reject) => {
      const fn = client[method] as (r: object, cb: (e: ServiceError | null, res: CsiReply) => void) => void;
      fn.call(client, req, (e, res) => (e ? reject(e) : resolve(res)));
    });
  return {
    call,
    code: (method, req) =>
      call(method, req).then(
        () => "OK" as const,
        (e: ServiceError) => e.code,
      ),
    close: () => client.close(),
  };
}
