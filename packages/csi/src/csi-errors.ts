import { type ServerUnaryCall, type ServiceError, type sendUnaryData, status } from "@grpc/grpc-js";
import { GRPC_STATUS_BY_CODE, isKeelsonError, KeelsonError } from "@keelson/sdk";

/** A CSI error: the spec's gRPC status and a message saying why (ABORTED, OUT_OF_RANGE, ... have CSI meanings). */
export class CsiError extends Error {
  readonly status: status;
  constructor(code: status, message: string) {
    super(message);
    this.name = "CsiError";
    this.status = code;
  }
}

/** INVALID_ARGUMENT naming the request field at fault, as the spec asks. */
export function invalidField(field: string, why: string): CsiError {
  return new CsiError(status.INVALID_ARGUMENT, `${field}: ${why}`);
}

/** An error's message, whatever was thrown. */
export function messageOf(error: unknown): string {
  return error instanceof Error ? error.message : String(error);
}

/** The gRPC error a sidecar gets: CsiError as it is, the engine's typed errors by their status, anything else INTERNAL. */
export function toCsiStatus(error: unknown): Partial<ServiceError> {
  if (error instanceof CsiError) return { code: error.status, details: error.message };
  if (isKeelsonError(error)) return { code: GRPC_STATUS_BY_CODE[error.code], details: `${error.code}: ${error.message}` };
  return { code: status.INTERNAL, details: messageOf(error) };
}

/** A CSI unary handler from an async function of the request; every failure is converted at this edge. */
export function csiUnary<Req>(fn: (req: Req) => Promise<unknown>) {
  return (call: ServerUnaryCall<Req, unknown>, callback: sendUnaryData<unknown>): void => {
    Promise.resolve()
      .then(() => fn(call.request))
      .then(
        (res) => callback(null, res),
        (error: unknown) => callback(toCsiStatus(error) as ServiceError, null),
      );
  };
}

/**
 * One operation per volume at a time: a second call for a volume whose first is still running gets
 * ABORTED (the sidecars retry it), as the spec asks, rather than racing it.
 */
export class VolumeLocks {
  readonly #busy = new Set<string>();

  async run<T>(volumeId: string, what: string, fn: () => Promise<T>): Promise<T> {
    if (this.#busy.has(volumeId)) {
      throw new CsiError(status.ABORTED, `${what}: another operation on ${volumeId} is in progress`);
    }
    this.#busy.add(volumeId);
    try {
      return await fn();
    } finally {
      this.#busy.delete(volumeId);
    }
  }
}

/** True when `error` is the engine's "no such object" (a delete of what is gone succeeds). */
export function isNotFound(error: unknown): boolean {
  return error instanceof KeelsonError && (error.code === "VOLUME_NOT_FOUND" || error.code === "SNAPSHOT_NOT_FOUND");
}
