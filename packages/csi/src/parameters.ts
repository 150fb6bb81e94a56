import { KeelsonError, type QosLimits, type QosPolicy } from "@keelson/sdk";

/** What a StorageClass's parameters ask of a volume, validated. */
export interface VolumeParameters {
  replicas: number;
  /**
   * A cluster volume even with one replica (`replicated: "true"`): attachable on any node, served by
   * the replicated frontend. Implied by replicas > 1; a plain one-replica volume lives on the
   * controller's engine's pool and is usable on that node only.
   */
  replicated: boolean;
  /** A QoS class from the engine's configuration, or undefined. */
  qosClass: string | undefined;
  /** Explicit limits and reservations (over the class's, when both are given); undefined when none. */
  qos: QosPolicy | undefined;
  fsType: "ext4" | "xfs";
  /** Extra mkfs arguments, split on spaces. */
  mkfsOptions: string[];
  /** Where the frontend runs relative to a replica: "none" (anywhere), "preferred", "required". */
  dataLocality: "none" | "preferred" | "required";
}

/** Keys Kubernetes' sidecars add (`csi.storage.k8s.io/...`: secrets references, PVC name and namespace): not the driver's. */
const SIDECAR_PREFIX = "csi.storage.k8s.io/";

const MAX_REPLICAS = 5;
const RATE_KEYS: Record<string, keyof QosLimits> = {
  readIopsLimit: "readIops",
  writeIopsLimit: "writeIops",
  totalIopsLimit: "totalIops",
  readBytesPerSecLimit: "readBytesPerSec",
  writeBytesPerSecLimit: "writeBytesPerSec",
};
/** The parameters a VolumeAttributesClass may change on a live volume (ControllerModifyVolume). */
export const QOS_PARAMETERS: ReadonlySet<string> = new Set([
  "qosClass",
  "reservationIops",
  "reservationBytesPerSec",
  "weight",
  "readIopsLimit",
  "writeIopsLimit",
  "totalIopsLimit",
  "readBytesPerSecLimit",
  "writeBytesPerSecLimit",
]);
const KNOWN = new Set([
  "replicas",
  "replicated",
  "qosClass",
  "fsType",
  "mkfsOptions",
  "dataLocality",
  "encryption",
  "reservationIops",
  "reservationBytesPerSec",
  "weight",
  ...Object.keys(RATE_KEYS),
]);

function invalid(key: string, why: string): KeelsonError {
  return new KeelsonError({ code: "INVALID_ARGUMENT", message: `StorageClass parameter ${key}: ${why}` });
}

/** A positive integer (bytes and rates take the suffixes k, M, G, T in powers of 1024 for bytes, 1000 for rates). */
function positiveInteger(key: string, value: string, unit: 1000 | 1024): number {
  const m = /^(\d+)([kKMGT]?)$/.exec(value.trim());
  if (!m) throw invalid(key, `a positive integer (optionally with k, M, G or T) is expected, got ${JSON.stringify(value)}`);
  const power = { "": 0, k: 1, K: 1, M: 2, G: 3, T: 4 }[m[2] as "" | "k" | "K" | "M" | "G" | "T"];
  const n = Number(m[1]) * unit ** power;
  if (!Number.isSafeInteger(n) || n <= 0)
    throw invalid(key, `a positive integer below 2^53 is expected, got ${JSON.stringify(value)}`);
  return n;
}

function oneOf<T extends string>(key: string, value: string, allowed: readonly T[]): T {
  if ((allowed as readonly string[]).includes(value)) return value as T;
  throw invalid(key, `one of ${allowed.join(", ")} is expected, got ${JSON.stringify(value)}`);
}

/**
 * Validates a StorageClass's parameters (CreateVolumeRequest.parameters). Every key must be known (a typo
 * such as `replica: 3` would otherwise give a volume other than the one asked for); keys under
 * `csi.storage.k8s.io/` are the sidecars' and are skipped. `encryption` is reserved and refused until
 * volumes can be encrypted.
 */
export function parseParameters(parameters: Readonly<Record<string, string>>): VolumeParameters {
  const p: VolumeParameters = {
    replicas: 1,
    replicated: false,
    qosClass: undefined,
    qos: undefined,
    fsType: "ext4",
    mkfsOptions: [],
    dataLocality: "none",
  };
  const limits: QosLimits = {};
  const qos: QosPolicy = {};
  for (const [key, value] of Object.entries(parameters)) {
    if (key.startsWith(SIDECAR_PREFIX)) continue;
    if (!KNOWN.has(key)) throw invalid(key, `unknown; the driver takes ${[...KNOWN].sort().join(", ")}`);
    switch (key) {
      case "replicas":
        p.replicas = positiveInteger(key, value, 1000);
        if (p.replicas > MAX_REPLICAS) throw invalid(key, `at most ${MAX_REPLICAS}, got ${p.replicas}`);
        break;
      case "replicated":
        p.replicated = oneOf(key, value, ["true", "false"] as const) === "true";
        break;
      case "qosClass":
        if (!/^[a-z0-9][a-z0-9._-]{0,62}$/.test(value))
          throw invalid(key, `a class name is expected, got ${JSON.stringify(value)}`);
        p.qosClass = value;
        break;
      case "fsType":
        p.fsType = oneOf(key, value, ["ext4", "xfs"] as const);
        break;
      case "mkfsOptions":
        // Passed to mkfs as separate arguments (never through a shell): no quoting to get wrong.
        if (!/^[A-Za-z0-9 ,=_.:^-]*$/.test(value))
          throw invalid(key, "only letters, digits, spaces and , = _ . : ^ - are allowed");
        p.mkfsOptions = value.split(" ").filter((a) => a.length > 0);
        break;
      case "dataLocality":
        p.dataLocality = oneOf(key, value, ["none", "preferred", "required"] as const);
        break;
      case "encryption":
        if (value !== "" && value !== "false") throw invalid(key, "volumes cannot be encrypted yet; this parameter is reserved");
        break;
      case "reservationIops":
        qos.reservationIops = positiveInteger(key, value, 1000);
        break;
      case "reservationBytesPerSec":
        qos.reservationBytesPerSec = positiveInteger(key, value, 1024);
        break;
      case "weight":
        qos.weight = positiveInteger(key, value, 1000);
        break;
      default: {
        const limit = RATE_KEYS[key];
        if (!limit) throw invalid(key, "unknown");
        limits[limit] = { rate: positiveInteger(key, value, key.includes("Bytes") ? 1024 : 1000) };
      }
    }
  }
  if (Object.keys(limits).length > 0) qos.limits = limits;
  if (Object.keys(qos).length > 0) p.qos = qos;
  return p;
}
