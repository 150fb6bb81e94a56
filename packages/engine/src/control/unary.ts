import { type ServerUnaryCall, type ServiceError, type sendUnaryData, status } from "@grpc/grpc-js";
import { KeelsonError, toServiceError } from "@keelson/sdk";
import { messageOf } from "../util/errors.js";
import type { Logger } from "../util/log.js";
import { authorizeCall, type CallerCheck, type RpcName } from "./roles.js";

function toWireError(error: unknown): Partial<ServiceError> {
  // Metadata store failures arrive as KeelsonError already (UNAVAILABLE while it is away): converted in metadata/.
  if (error instanceof KeelsonError) return toServiceError(error);
  return { code: status.INTERNAL, details: messageOf(error) };
}

/** What the unary edge needs of the control context: where failures are logged, and whether callers' roles are checked. */
export interface UnaryContext {
  log: Logger;
  /** Default "none": every caller is admin (no mutual TLS). */
  callerCheck?: CallerCheck;
}

/** The caller's certificate (grpc-js gives it only for a verified mutual-TLS peer). */
function peerCertificate(call: Pick<ServerUnaryCall<unknown, unknown>, "getAuthContext">) {
  return call.getAuthContext?.()?.sslPeerCertificate;
}

/**
 * Adapts an async handler to grpc-js, mapping KeelsonError to status + keelson-code at this edge only. The
 * caller's role is checked first (roles.ts): a refused call gets PERMISSION_DENIED and never reaches `fn`.
 */
export function unary<Req, Res>(ctx: UnaryContext, method: RpcName, fn: (req: Req) => Promise<Res>) {
  return (call: ServerUnaryCall<Req, Res>, callback: sendUnaryData<Res>): void => {
    const run = async (): Promise<Res> => {
      authorizeCall(ctx.callerCheck ?? "none", method, peerCertificate(call));
      return fn(call.request);
    };
    run().then(
      (res) => callback(null, res),
      (error: unknown) => {
        const wire = toWireError(error);
        const level = wire.code === status.INTERNAL || wire.code === status.DATA_LOSS ? "error" : "info";
        ctx.log.log(level, "control call failed", { method, code: (error as KeelsonError).code, error: wire.details });
        callback(wire as ServiceError, null);
      },
    );
  };
}

export function requireString(value: unknown, field: string): string {
  if (typeof value !== "string" || value.length === 0) {
    throw new KeelsonError({ code: "INVALID_ARGUMENT", message: `${field} is required` });
  }
  return value;
}

export function positive(value: number, field: string): number {
  if (!Number.isFinite(value) || value <= 0) {
    throw new KeelsonError({ code: "INVALID_ARGUMENT", message: `${field} must be a positive number, got ${value}` });
  }
  return value;
}
