import { KeelsonError, type QosLimits, type RateLimit } from "@keelson/sdk";
import { absentQosPolicy, DEFAULT_QOS_WEIGHT, type QosPolicyRecord } from "../store/catalog.js";
import { messageOf } from "../util/errors.js";

// Limits have one shape on the wire, in the SDK and here: the SDK's types.
export type { QosLimits, RateLimit };

/**
 * A volume's QoS: limits, a guaranteed floor and a share of what is left.
 * The pool's catalog stores it as is, so its shape is the store's record.
 */
export type QosPolicy = QosPolicyRecord;

export const LIMIT_KEYS = ["readIops", "writeIops", "totalIops", "readBytesPerSec", "writeBytesPerSec"] as const;
export type LimitKey = (typeof LIMIT_KEYS)[number];

export const DEFAULT_WEIGHT = DEFAULT_QOS_WEIGHT;
export const MAX_WEIGHT = 1000;
/** Limits beyond this are refused as typos (a 1 TB/s or 100 M IOPS limit limits nothing). */
const MAX_RATE = 1e12;

/** No limits, no reservation, default weight. */
export function defaultPolicy(): QosPolicy {
  return absentQosPolicy();
}

function invalid(message: string): KeelsonError {
  return new KeelsonError({ code: "INVALID_ARGUMENT", message });
}

function checkNumber(value: unknown, what: string, min: number, max: number): number {
  if (typeof value !== "number" || !Number.isFinite(value) || value < min || value > max) {
    throw invalid(`invalid ${what} ${String(value)}: a number from ${min} to ${max}`);
  }
  return value;
}

/** The default burst of a rate: a tenth of a second's worth, and at least one. */
export function burstOf(limit: RateLimit): number {
  return limit.burst !== undefined && limit.burst > 0 ? limit.burst : Math.max(1, limit.rate / 10);
}

/** Checks and normalizes a policy; INVALID_ARGUMENT names the bad field and its valid range. */
export function validatePolicy(input: Partial<QosPolicy>): QosPolicy {
  const limits: QosLimits = {};
  for (const key of LIMIT_KEYS) {
    const limit = input.limits?.[key];
    if (!limit || limit.rate === 0) continue;
    const rate = checkNumber(limit.rate, `limits.${key}.rate`, 1, MAX_RATE);
    const burst =
      limit.burst === undefined || limit.burst === 0 ? undefined : checkNumber(limit.burst, `limits.${key}.burst`, 1, MAX_RATE);
    limits[key] = burst === undefined ? { rate } : { rate, burst };
  }
  return {
    limits,
    reservationIops: checkNumber(input.reservationIops ?? 0, "reservationIops", 0, MAX_RATE),
    reservationBytesPerSec: checkNumber(input.reservationBytesPerSec ?? 0, "reservationBytesPerSec", 0, MAX_RATE),
    weight: checkNumber(
      input.weight === undefined || input.weight === 0 ? DEFAULT_WEIGHT : input.weight,
      "weight",
      1,
      MAX_WEIGHT,
    ),
  };
}

/** True when the policy limits nothing and reserves nothing (the fast path skips all QoS work). */
export function isUnlimited(policy: QosPolicy): boolean {
  return LIMIT_KEYS.every((k) => policy.limits[k] === undefined) && policy.reservationIops === 0;
}

/**
 * Named policies (`gold`, `silver`, ...) defined once per cluster and named
 * at volume creation; parsed from JSON `{ "gold": { "reservationIops": 3000, ... } }`.
 */
export function parseQosClasses(json: string, source: string): Map<string, QosPolicy> {
  let parsed: unknown;
  try {
    parsed = JSON.parse(json);
  } catch (error) {
    throw invalid(`QoS classes in ${source} are not JSON: ${messageOf(error)}`);
  }
  if (typeof parsed !== "object" || parsed === null || Array.isArray(parsed)) {
    throw invalid(`QoS classes in ${source} must be an object of class name to policy`);
  }
  const classes = new Map<string, QosPolicy>();
  for (const [name, policy] of Object.entries(parsed as Record<string, Partial<QosPolicy>>)) {
    if (!/^[a-z0-9][a-z0-9-]{0,62}$/.test(name)) throw invalid(`invalid QoS class name ${JSON.stringify(name)} in ${source}`);
    try {
      classes.set(name, validatePolicy(policy));
    } catch (error) {
      throw invalid(`QoS class ${name} in ${source}: ${messageOf(error)}`);
    }
  }
  return classes;
}

/** `base` with every field set in `override` replacing it (limits key by key). */
export function mergePolicy(base: QosPolicy, override: Partial<QosPolicy>): Partial<QosPolicy> {
  return {
    limits: { ...base.limits, ...override.limits },
    reservationIops: override.reservationIops || base.reservationIops,
    reservationBytesPerSec: override.reservationBytesPerSec || base.reservationBytesPerSec,
    weight: override.weight || base.weight,
  };
}
