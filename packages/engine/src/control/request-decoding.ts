import type { ServiceDefinition } from "@grpc/grpc-js";
import { KeelsonError } from "@keelson/sdk";
import { messageOf } from "../util/errors.js";

/**
 * A request whose bytes did not decode (truncated, a field of the wrong wire type, an integer past
 * 2^53). grpc-js answers a deserializer that throws with INTERNAL, as if the server were at fault; the
 * request's handler gets this instead and refuses it as INVALID_ARGUMENT.
 */
export class UndecodableRequest {
  readonly reason: string;
  constructor(reason: string) {
    this.reason = reason;
  }
}

/** `service` with each method's request decoder giving an {@link UndecodableRequest} rather than throwing. */
export function withTypedDecodeErrors<S extends ServiceDefinition>(service: S): S {
  const wrapped: Record<string, unknown> = {};
  for (const [name, method] of Object.entries(service)) {
    wrapped[name] = {
      ...method,
      requestDeserialize: (bytes: Buffer): unknown => {
        try {
          return method.requestDeserialize(bytes);
        } catch (error) {
          return new UndecodableRequest(messageOf(error));
        }
      },
    };
  }
  return wrapped as S;
}

/** INVALID_ARGUMENT for a request that did not decode (see {@link withTypedDecodeErrors}). */
export function refuseUndecodable(method: string, request: unknown): void {
  if (request instanceof UndecodableRequest) {
    throw new KeelsonError({ code: "INVALID_ARGUMENT", message: `${method}: the request does not decode: ${request.reason}` });
  }
}
