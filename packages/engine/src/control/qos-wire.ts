import { KeelsonError } from "@keelson/sdk";
import type { WireDiskCapability, WireQosPolicy } from "@keelson/sdk/experimental";
import type { DiskCapability } from "../qos/admission.js";
import { LIMIT_KEYS, mergePolicy, type QosLimits, type QosPolicy, validatePolicy } from "../qos/policy.js";

/** The wire form of a policy. */
export function policyToWire(p: QosPolicy): WireQosPolicy {
  const rate = (key: (typeof LIMIT_KEYS)[number]) => {
    const l = p.limits[key];
    return l ? { rate: l.rate, burst: l.burst ?? 0 } : undefined;
  };
  return {
    limits: {
      readIops: rate("readIops"),
      writeIops: rate("writeIops"),
      totalIops: rate("totalIops"),
      readBytesPerSec: rate("readBytesPerSec"),
      writeBytesPerSec: rate("writeBytesPerSec"),
    },
    reservationIops: p.reservationIops,
    reservationBytesPerSec: p.reservationBytesPerSec,
    weight: p.weight,
  };
}

function partialFromWire(w: WireQosPolicy | undefined): Partial<QosPolicy> {
  const limits: QosLimits = {};
  for (const key of LIMIT_KEYS) {
    const l = w?.limits?.[key];
    if (l && l.rate !== 0) limits[key] = l.burst ? { rate: l.rate, burst: l.burst } : { rate: l.rate };
  }
  return {
    limits,
    reservationIops: w?.reservationIops ?? 0,
    reservationBytesPerSec: w?.reservationBytesPerSec ?? 0,
    weight: w?.weight ?? 0,
  };
}

/**
 * The policy a request asks for: its class (if named) with the fields set in
 * `qos` on top; INVALID_ARGUMENT for an unknown class or a bad field.
 */
export function resolvePolicy(
  classes: ReadonlyMap<string, QosPolicy>,
  className: string,
  wire: WireQosPolicy | undefined,
): { policy: QosPolicy; qosClass: string | undefined } {
  const override = partialFromWire(wire);
  if (className === "") return { policy: validatePolicy(override), qosClass: undefined };
  const base = classes.get(className);
  if (!base) {
    const known = [...classes.keys()].join(", ") || "none are configured";
    throw new KeelsonError({
      code: "INVALID_ARGUMENT",
      message: `unknown QoS class ${JSON.stringify(className)}; known: ${known}`,
    });
  }
  return { policy: validatePolicy(mergePolicy(base, override)), qosClass: className };
}

export function capabilityToWire(c: DiskCapability | undefined): WireDiskCapability | undefined {
  if (!c) return undefined;
  return {
    iops: c.iops,
    bytesPerSec: c.bytesPerSec,
    source: c.source,
    measuredAt: new Date(c.measuredAtMs),
    headroom: c.headroom,
  };
}
