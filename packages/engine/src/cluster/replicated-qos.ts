import { KeelsonError } from "@keelson/sdk";
import { type ClusterVolumeRecord, refs } from "../metadata/index.js";
import { DEFAULT_WEIGHT, defaultPolicy, type QosPolicy } from "../qos/policy.js";
import type { ClusterMembership } from "./membership.js";

/**
 * Where this node enforces a replicated volume's QoS: the QoS stage of the
 * frontend's pipeline (target/). The daemon injects it, so cluster/ does not
 * reach into target/.
 */
export interface ReplicatedQos {
  /** Sets or replaces the policy of `volumeName`'s frontend on this node, live. Idempotent. */
  apply(volumeName: string, policy: QosPolicy): void;
  /** Forgets it (detached or deleted); I/O still waiting on it runs. Idempotent. */
  remove(volumeName: string): void;
}

/** Attempts at the compare-and-swap of a QoS change before giving up (others keep changing the record). */
const MAX_QOS_UPDATE_ATTEMPTS = 16;

/**
 * A replicated volume takes limits only: a reservation or a weight is a share
 * of one disk, and a frontend's I/O lands on several disks (its replicas'),
 * so no single disk scheduler could honour it. INVALID_ARGUMENT otherwise.
 */
export function requireLimitsOnly(volumeName: string, policy: QosPolicy): QosPolicy {
  if (policy.reservationIops > 0 || policy.reservationBytesPerSec > 0 || policy.weight !== DEFAULT_WEIGHT) {
    throw new KeelsonError({
      code: "INVALID_ARGUMENT",
      message:
        `replicated volume ${volumeName} takes QoS limits only: reservationIops ${policy.reservationIops}, ` +
        `reservationBytesPerSec ${policy.reservationBytesPerSec} and weight ${policy.weight} must be 0, 0 and ${DEFAULT_WEIGHT}`,
    });
  }
  return policy;
}

/** The policy a replicated volume's record holds (no limits when it holds none). */
export function policyOf(record: ClusterVolumeRecord): QosPolicy {
  return record.qos ?? defaultPolicy();
}

/**
 * Stores `policy` in the volume's record (compare-and-swap, so a concurrent
 * change of its replica sets is not lost). `changed` is false when the record
 * already held exactly this policy and class. VOLUME_NOT_FOUND when it is no
 * replicated volume.
 */
export async function setReplicatedVolumeQos(
  m: ClusterMembership,
  name: string,
  policy: QosPolicy,
  qosClass: string,
): Promise<{ record: ClusterVolumeRecord; changed: boolean }> {
  requireLimitsOnly(name, policy);
  const ref = refs.volume(name);
  for (let attempt = 0; attempt < MAX_QOS_UPDATE_ATTEMPTS; attempt++) {
    const current = await m.metadata.get(ref);
    if (current === null) {
      throw new KeelsonError({ code: "VOLUME_NOT_FOUND", message: `replicated volume ${JSON.stringify(name)} does not exist` });
    }
    const same =
      JSON.stringify(policyOf(current.value)) === JSON.stringify(policy) && (current.value.qosClass ?? "") === qosClass;
    if (same) return { record: current.value, changed: false };
    const record: ClusterVolumeRecord = { ...current.value, qos: policy, qosClass };
    if (await m.metadata.commit({ if: [{ ref, version: current.version }], put: [{ ref, value: record }] })) {
      return { record, changed: true };
    }
  }
  throw new KeelsonError({
    code: "UNAVAILABLE",
    message: `volume ${name}: its record changed under every attempt to set its QoS`,
  });
}
