// The latency family: the bench profiles' IOPS and completion-latency
// percentiles on one and on three replicas.

import type { Threshold } from "../../report/types.js";
import type { Check } from "../check.js";
import { settled } from "../qos/load.js";
import { latencyReplicas1, latencyReplicas3, sanityThresholds } from "./latency.js";

export const LATENCY_CHECKS: readonly Check[] = [latencyReplicas1, latencyReplicas3].map(settled);

/** Loose sanity bounds per check (see {@link sanityThresholds}); `compare` gates regressions. */
export const LATENCY_DEFAULT_THRESHOLDS: Readonly<Record<string, Readonly<Record<string, Threshold>>>> = Object.fromEntries(
  LATENCY_CHECKS.map((check) => [check.id, sanityThresholds()]),
);
