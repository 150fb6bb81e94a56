import { type ServerUnaryCall, type ServiceError, type sendUnaryData, status } from "@grpc/grpc-js";
import { KeelsonError, toServiceError } from "@keelson/sdk";
import { messageOf } from "../util/errors.js";
import type { Logger } from "../util/log.js";
import { refuseUndecodable } from "./request-decoding.js";
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

/** Who made a call: the node its certificate names (mutual TLS, OU=node), and the IP address it called from. */
export interface ControlCaller {
  certifiedNode: string | null;
  address: string;
}

/** The IP address in grpc-js's peer string (`10.0.0.1:5000`, `::ffff:10.0.0.1:5000`; "" for `unknown`, a unix socket). */
export function addressOfPeer(peer: string): string {
  const at = peer.lastIndexOf(":");
  if (at <= 0 || !/^\d+$/.test(peer.slice(at + 1))) return "";
  return peer.slice(0, at).replace(/^\[|\]$/g, "");
}

/**
 * Adapts an async handler to grpc-js, mapping KeelsonError to status + keelson-code at this edge only. The
 * caller's role is checked first (roles.ts): a refused call gets PERMISSION_DENIED and never reaches `fn`.
 */
export function unary<Req, Res>(ctx: UnaryContext, method: RpcName, fn: (req: Req, caller: ControlCaller) => Promise<Res>) {
  return (call: ServerUnaryCall<Req, Res>, callback: sendUnaryData<Res>): void => {
    const run = async (): Promise<Res> => {
      const identity = authorizeCall(ctx.callerCheck ?? "none", method, peerCertificate(call));
      refuseUndecodable(method, call.request);
      const caller = {
        certifiedNode: identity.role === "node" && identity.name ? identity.name : null,
        address: addressOfPeer(call.getPeer?.() ?? ""),
      };
      return fn(call.request, caller);
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
