import assert from "node:assert";
import type { Metadata, ServerUnaryCall, ServiceError, sendUnaryData } from "@grpc/grpc-js";
import { ERROR_CODE_METADATA_KEY, isKeelsonError, KeelsonError } from "@keelson/sdk";
import {
  NodeServiceService,
  SnapshotServiceService,
  VolumeServiceService,
  type WireQosPolicy,
  type WireVolumeSource,
} from "@keelson/sdk/experimental";
import type { ControlContext } from "../../../control/context.js";
import { nodeService } from "../../../control/node-service.js";
import { resolvePolicy } from "../../../control/qos-wire.js";
import { snapshotService } from "../../../control/snapshot-service.js";
import { positive, requireString } from "../../../control/unary.js";
import { volumeService } from "../../../control/volume-service.js";
import { sourceFromWire } from "../../../control/volume-wire.js";
import { defaultPolicy, type QosPolicy } from "../../../qos/policy.js";
import {
  validateLabels,
  validateReplicas,
  validateSizeBytes,
  validateSnapshotName,
  validateVolumeName,
} from "../../../store/validation.js";
import { type FuzzTarget, within } from "../target.js";

/** Longest a call may take to answer (nothing behind the context waits: it answers UNAVAILABLE at once). */
const CALL_BOUND_MS = 2_000;

/**
 * Something the fuzzed call must not reach past validation: touching any
 * member answers UNAVAILABLE, a typed error, so a request that gets this far
 * has passed the checks under test and ends cleanly.
 */
function beyondValidation(what: string): object {
  const past = (member: string) =>
    new KeelsonError({ code: "UNAVAILABLE", message: `fuzz harness: ${what}${member} is past validation` });
  // A function as the target, so that calling it (ctx.calibrate()) is refused the same way.
  return new Proxy(() => undefined, {
    get: (_t, prop) => {
      throw past(`.${String(prop)}`);
    },
    apply: () => {
      throw past("()");
    },
  });
}

/** A control context with no pool, NBD server or cluster behind it; QoS classes and the membership as the input picks. */
function contextFor(flags: number): ControlContext {
  const classes = new Map<string, QosPolicy>(
    flags & 2 ? [["gold", { ...defaultPolicy(), limits: { readIops: { rate: 1000, burst: 2000 } }, weight: 4 }]] : [],
  );
  const membership = flags & 1 ? { ...beyondValidationMembers(), nodeId: "node1" } : null;
  const known: Record<string, unknown> = {
    qosClasses: classes,
    membership: () => membership,
    frontends: new Map(),
    log: { log: () => undefined },
    zone: "",
    nodeId: "node1",
    version: "0.0.0-fuzz",
  };
  return new Proxy(known, {
    get: (target, prop) => (typeof prop === "string" && prop in target ? target[prop] : beyondValidation(`ctx.${String(prop)}`)),
  }) as unknown as ControlContext;
}

function beyondValidationMembers(): Record<string, unknown> {
  const cluster = beyondValidation("membership");
  return { metadata: cluster, peers: cluster, nodes: () => cluster };
}

type Handler = (call: ServerUnaryCall<unknown, unknown>, callback: sendUnaryData<unknown>) => void;

interface Method {
  name: string;
  decode: (b: Buffer) => unknown;
  encode: (v: never) => Buffer;
  handler: (ctx: ControlContext) => Handler;
}

function methodsOf(
  service: string,
  definitions: Record<string, { requestDeserialize: (b: Buffer) => unknown; requestSerialize: (v: never) => Buffer }>,
  server: (ctx: ControlContext) => object,
): Method[] {
  return Object.entries(definitions).map(([name, d]) => ({
    name: `${service}.${name}`,
    decode: d.requestDeserialize,
    encode: d.requestSerialize,
    handler: (ctx) => (server(ctx) as Record<string, Handler>)[name] as Handler,
  }));
}

const METHODS: readonly Method[] = [
  ...methodsOf("VolumeService", VolumeServiceService, volumeService),
  ...methodsOf("SnapshotService", SnapshotServiceService, snapshotService),
  ...methodsOf("NodeService", NodeServiceService, nodeService),
];

/** Runs `fn`; anything it throws must be a KeelsonError. */
function typedOnly(what: string, fn: () => unknown): void {
  try {
    fn();
  } catch (error) {
    if (!isKeelsonError(error)) assert.fail(`${what} threw an untyped ${String(error)}`);
  }
}

/** The validation and wire conversion functions, on the fields of a decoded request that they take. */
function validateFields(req: Record<string, unknown>, classes: ReadonlyMap<string, QosPolicy>): void {
  for (const field of ["name", "volume", "snapshot", "nodeId", "baseSnapshot"]) {
    if (typeof req[field] !== "string") continue;
    typedOnly(`requireString(${field})`, () => requireString(req[field], field));
    typedOnly(`validateVolumeName(${field})`, () => validateVolumeName(req[field]));
    typedOnly(`validateSnapshotName(${field})`, () => validateSnapshotName(req[field]));
  }
  if ("sizeBytes" in req) typedOnly("validateSizeBytes", () => validateSizeBytes(req.sizeBytes));
  if ("labels" in req) typedOnly("validateLabels", () => validateLabels(req.labels as Record<string, string>));
  if ("replicas" in req) typedOnly("validateReplicas", () => validateReplicas(req.replicas));
  if ("source" in req) typedOnly("sourceFromWire", () => sourceFromWire(req.source as WireVolumeSource | undefined));
  if ("qos" in req || "qosClass" in req) {
    const className = typeof req.qosClass === "string" ? req.qosClass : "";
    typedOnly("resolvePolicy", () => resolvePolicy(classes, className, req.qos as WireQosPolicy | undefined));
  }
  for (const field of ["iops", "bytesPerSec"]) {
    if (typeof req[field] === "number") typedOnly(`positive(${field})`, () => positive(req[field] as number, field));
  }
}

/** Calls the handler as grpc-js would; resolves with the error it answered (null: success). */
function call(handler: Handler, request: unknown, name: string): Promise<Partial<ServiceError> | null> {
  return new Promise((resolve) => {
    let answers = 0;
    try {
      handler({ request } as ServerUnaryCall<unknown, unknown>, (error) => {
        answers++;
        assert.equal(answers, 1, `${name} answered twice`);
        resolve(error as Partial<ServiceError> | null);
      });
    } catch (error) {
      // grpc-js would not answer such a call at all: the client waits for its deadline.
      assert.fail(`${name} threw out of the handler instead of answering: ${String(error)}`);
    }
  });
}

/**
 * Control API request validation: byte 0 picks the method, byte 1 the
 * context (bit 0: in a cluster, bit 1: a QoS class "gold" is configured), the
 * rest is the protobuf request as it arrives on the wire. Bytes the
 * generated decoder refuses never reach the engine (grpc-js answers them) and
 * are skipped. Invariants: the handler answers exactly once, in time, with
 * success or a typed error (a keelson code in the metadata, never a bare
 * INTERNAL from an untyped exception); the validation and conversion
 * functions throw nothing but KeelsonError for any decoded field.
 */
export const controlRequests: FuzzTarget = {
  name: "control-requests",
  maxLen: 1024,
  dictionary: [
    Buffer.from("gold"),
    Buffer.from("db"),
    Buffer.from("@"),
    Buffer.from([0x0a]),
    Buffer.from([0x10]),
    Buffer.from([0x1a]),
  ],
  seeds: controlSeeds,
  async run(input) {
    const method = METHODS[(input[0] ?? 0) % METHODS.length] as Method;
    const flags = input[1] ?? 0;
    let request: unknown;
    try {
      request = method.decode(input.subarray(2));
    } catch {
      return;
    }
    const ctx = contextFor(flags);
    validateFields(request as Record<string, unknown>, ctx.qosClasses);
    const error = await within(call(method.handler(ctx), request, method.name), CALL_BOUND_MS, method.name, assert.fail);
    if (error === null) return;
    const code = (error.metadata as Metadata | undefined)?.get(ERROR_CODE_METADATA_KEY)[0];
    assert.ok(code !== undefined, `${method.name} answered status ${error.code} without a keelson code: ${error.details}`);
  },
};

/** A valid request for every method: the decoder's defaults with the fields a client sets filled in. */
function controlSeeds(): Buffer[] {
  const sample: Record<string, unknown> = {
    name: "db",
    volume: "db",
    snapshot: "s1",
    sizeBytes: 1024 * 1024,
    labels: { app: "pg" },
    replicas: 1,
    qosClass: "gold",
    nodeId: "node2",
    epoch: 3,
    iops: 5000,
    bytesPerSec: 100 * 1024 * 1024,
    headroom: 0.2,
  };
  return METHODS.flatMap((m, i) => {
    const defaults = m.decode(Buffer.alloc(0)) as Record<string, unknown>;
    const filled = Object.fromEntries(Object.keys(defaults).map((k) => [k, k in sample ? sample[k] : defaults[k]]));
    const body = m.encode(filled as never);
    return [0, 1, 3].map((flags) => Buffer.concat([Buffer.from([i, flags]), body]));
  });
}
