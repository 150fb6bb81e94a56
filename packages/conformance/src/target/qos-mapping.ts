// The suite's QoS request in keelson's terms.

import type { QosPolicy, RateLimit } from "@keelson/sdk";
import type { QosSpec, RateSpec } from "./target.js";

function rate(spec: RateSpec | undefined): RateLimit | undefined {
  if (!spec) return undefined;
  return spec.burst === undefined ? { rate: spec.rate } : { rate: spec.rate, burst: spec.burst };
}

/** keelson's policy for a QosSpec: limits, and a reservation when one is asked. */
export function toKeelsonPolicy(qos: QosSpec): QosPolicy {
  const limits = {
    readIops: rate(qos.readIops),
    writeIops: rate(qos.writeIops),
    totalIops: rate(qos.totalIops),
    readBytesPerSec: rate(qos.readBytesPerSec),
    writeBytesPerSec: rate(qos.writeBytesPerSec),
  };
  const policy: QosPolicy = { limits };
  if (qos.reservationIops !== undefined) policy.reservationIops = qos.reservationIops;
  return policy;
}
