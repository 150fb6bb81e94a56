import { type ServerUnaryCall, type ServiceError, type sendUnaryData, status } from "@grpc/grpc-js";
import { KeelsonError, toServiceError } from "@keelson/sdk";
import { messageOf } from "../util/errors.js";
import type { Logger } from "../util/log.js";

function toWireError(error: unknown): Partial<ServiceError> {
  // Metadata store failures arrive as KeelsonError already (UNAVAILABLE while it is away): converted in metadata/.
  if (error instanceof KeelsonError) return toServiceError(error);
  return { code: status.INTERNAL, details: messageOf(error) };
}

/** Adapts an async handler to grpc-js, mapping KeelsonError to status + keelson-code at this edge only. */
export function unary<Req, Res>(ctx: { log: Logger }, method: string, fn: (req: Req) => Promise<Res>) {
  return (call: ServerUnaryCall<Req, Res>, callback: sendUnaryData<Res>): void => {
    fn(call.request).then(
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
