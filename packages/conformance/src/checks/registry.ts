// Every check the suite has, by family, and the default thresholds they are
// judged by. The one place a new check is registered.

import type { Family, Threshold } from "../report/types.js";
import type { Check } from "./check.js";
import { HA_CHECKS, HA_DEFAULT_THRESHOLDS } from "./ha/index.js";
import { LATENCY_CHECKS, LATENCY_DEFAULT_THRESHOLDS } from "./latency/index.js";
import { QOS_CHECKS, QOS_DEFAULT_THRESHOLDS } from "./qos/index.js";
import { SNAPSHOT_CHECKS, SNAPSHOT_DEFAULT_THRESHOLDS } from "./snapshot/index.js";

export const CHECKS_BY_FAMILY: Readonly<Record<Family, readonly Check[]>> = {
  ha: HA_CHECKS,
  qos: QOS_CHECKS,
  latency: LATENCY_CHECKS,
  snapshot: SNAPSHOT_CHECKS,
};

/** Every check, families in report order. */
export const ALL_CHECKS: readonly Check[] = [...HA_CHECKS, ...QOS_CHECKS, ...LATENCY_CHECKS, ...SNAPSHOT_CHECKS];

/** The built-in profile's bounds: what a vendor starts from. */
export const DEFAULT_THRESHOLDS: Readonly<Record<string, Readonly<Record<string, Threshold>>>> = {
  ...HA_DEFAULT_THRESHOLDS,
  ...QOS_DEFAULT_THRESHOLDS,
  ...LATENCY_DEFAULT_THRESHOLDS,
  ...SNAPSHOT_DEFAULT_THRESHOLDS,
};

/** The checks of `families`, in report order. */
export function checksOf(families: readonly Family[]): Check[] {
  return ALL_CHECKS.filter((c) => families.includes(c.family));
}
