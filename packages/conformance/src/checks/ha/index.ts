// The `ha` family: failover, fencing and rebuild under a ledger writer.

import type { Threshold } from "../../report/types.js";
import type { Check } from "../check.js";
import { faultCampaign } from "./fault-campaign.js";
import { partition } from "./partition.js";
import { rebuild } from "./rebuild.js";
import { replicaLoss } from "./replica-loss.js";
import { servingNodeLoss } from "./serving-node-loss.js";

export const HA_CHECKS: readonly Check[] = [replicaLoss, servingNodeLoss, partition, rebuild, faultCampaign];

/**
 * What the default profile demands. Writes lost and split brain are 0 on any
 * storage worth the name; the time bounds are what a database's own failover
 * tolerates (a 30 s I/O stall trips most health checks).
 */
export const HA_DEFAULT_THRESHOLDS: Readonly<Record<string, Readonly<Record<string, Threshold>>>> = {
  "ha.replica-loss": { replicasKept: { min: 3 }, stallMs: { max: 5_000 }, lostWrites: { max: 0 }, writeErrors: { max: 0 } },
  "ha.serving-node-loss": {
    replicasKept: { min: 3 },
    rtoMs: { max: 30_000 },
    lostWrites: { max: 0 },
    replicaMismatchMiB: { max: 0 },
  },
  "ha.partition": { replicasKept: { min: 3 }, oldSideAcksAfterTakeover: { max: 0 }, lostWrites: { max: 0 } },
  "ha.rebuild": {
    replicasKept: { min: 3 },
    replicasCompared: { min: 3 },
    rebuildMiBps: { min: 1 },
    replicaMismatchMiB: { max: 0 },
    lostWrites: { max: 0 },
  },
  "ha.fault-campaign": {
    replicasKept: { min: 3 },
    lostWrites: { max: 0 },
    replicaMismatchMiB: { max: 0 },
    rtoMsMax: { max: 30_000 },
  },
};
