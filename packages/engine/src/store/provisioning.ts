import { KeelsonError } from "@keelson/sdk";
import { formatBytes } from "../util/size.js";
import type { PoolCore } from "./pool-core.js";

// Thin-provisioning over-commit: how much volume size a pool may promise
// against the data it can hold (Longhorn's "storage over-provisioning percentage").

/** Provisioned size a pool may promise by default, in percent of its data capacity. */
export const DEFAULT_OVERCOMMIT_PERCENT = 200;
/** Below 100% a pool could not even hold its own volumes written full; such a limit is a typo. */
export const MIN_OVERCOMMIT_PERCENT = 100;
/** An upper bound keeps `capacity x percent` far inside the safe integers. */
export const MAX_OVERCOMMIT_PERCENT = 100_000;

/** The pool's thin-provisioning figures, in bytes. */
export interface Provisioning {
  /** Sum of the sizes of the pool's volumes. Snapshots count nothing (as in Longhorn), though a volume with snapshots can hold more than its size. */
  provisionedBytes: number;
  /** The over-commit limit in force, in percent of the pool's data capacity. */
  overcommitPercent: number;
  /** Most provisioned bytes the limit allows: data capacity x percent / 100. */
  limitBytes: number;
}

/** `percent` when it is a valid over-commit limit; INVALID_ARGUMENT naming the valid range otherwise. */
export function validateOvercommitPercent(percent: unknown): number {
  if (
    typeof percent !== "number" ||
    !Number.isSafeInteger(percent) ||
    percent < MIN_OVERCOMMIT_PERCENT ||
    percent > MAX_OVERCOMMIT_PERCENT
  ) {
    throw new KeelsonError({
      code: "INVALID_ARGUMENT",
      message: `invalid over-commit limit ${JSON.stringify(percent)}: an integer percent from ${MIN_OVERCOMMIT_PERCENT} to ${MAX_OVERCOMMIT_PERCENT} (default ${DEFAULT_OVERCOMMIT_PERCENT})`,
    });
  }
  return percent;
}

/** Bytes of data extents the pool holds when every one is in use. */
function capacityOf(core: PoolCore): number {
  return core.layout.extentCount * core.layout.extentSizeBytes;
}

/** See `Pool.provisioning`. */
export function provisioningOf(core: PoolCore): Provisioning {
  let provisionedBytes = 0;
  for (const v of core.volumes.values()) provisionedBytes += v.sizeBytes;
  const overcommitPercent = core.overcommitPercent;
  return { provisionedBytes, overcommitPercent, limitBytes: Math.floor((capacityOf(core) * overcommitPercent) / 100) };
}

/**
 * Refuses with LIMIT_EXCEEDED when provisioning `addBytes` more (a new
 * volume's size, or what a resize adds) would take the pool past its
 * over-commit limit. `what` names the request in the message.
 */
export function checkProvisioning(core: PoolCore, addBytes: number, what: string): void {
  const p = provisioningOf(core);
  if (p.provisionedBytes + addBytes <= p.limitBytes) return;
  const capacity = capacityOf(core);
  throw new KeelsonError({
    code: "LIMIT_EXCEEDED",
    message:
      `${what} asks for ${formatBytes(addBytes)} (${addBytes} bytes) more, but pool ${core.device.path} may provision at most ` +
      `${formatBytes(p.limitBytes)} (${p.limitBytes} bytes), its over-commit limit of ${p.overcommitPercent}% of its ${formatBytes(capacity)} (${capacity} bytes) data capacity; ` +
      `${formatBytes(p.provisionedBytes)} (${p.provisionedBytes} bytes) provisioned already; ` +
      `delete volumes there, or raise its limit (keelsond --overcommit-percent)`,
  });
}
