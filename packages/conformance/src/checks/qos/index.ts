// The qos family: limits, burst, live changes, isolation, reservations and
// admission, each measured as figures and judged by the profile.

import type { Threshold } from "../../report/types.js";
import type { Check } from "../check.js";
import { ADMISSION_ID, admission } from "./admission.js";
import { BURST_ID, burst } from "./burst.js";
import { LIMIT_ACCURACY_ID, limitAccuracy } from "./limit-accuracy.js";
import { LIVE_CHANGE_ID, liveChange } from "./live-change.js";
import { settled } from "./load.js";
import { NOISY_NEIGHBOUR_ID, noisyNeighbour } from "./noisy-neighbour.js";
import { RESERVATION_FLOOR_ID, reservationFloor } from "./reservation-floor.js";

export const QOS_CHECKS: readonly Check[] = [limitAccuracy, burst, liveChange, noisyNeighbour, reservationFloor, admission].map(
  settled,
);

/** A limit is accurate within 10% either way: a token bucket measured over seconds does much better. */
const ACCURATE: Threshold = { min: 0.9, max: 1.1 };

/**
 * The bounds vendors start from (`thresholds[checkId][figureName]`). Figures
 * not named here are reported unjudged.
 */
export const QOS_DEFAULT_THRESHOLDS: Readonly<Record<string, Readonly<Record<string, Threshold>>>> = {
  [LIMIT_ACCURACY_ID]: {
    readIopsRatio: ACCURATE,
    writeIopsRatio: ACCURATE,
    totalIopsRatio: ACCURATE,
    readMiBPerSecRatio: ACCURATE,
    writeMiBPerSecRatio: ACCURATE,
  },
  // The burst is a difference of two large counts, so a fifth either way.
  [BURST_ID]: { burstRatio: { min: 0.8, max: 1.2 }, steadyRatio: ACCURATE },
  // A second is a long time for a throttle to follow a change it was told about.
  [LIVE_CHANGE_ID]: { ratioBefore: ACCURATE, ratioAfter: ACCURATE, effectDelayMs: { max: 1000 } },
  // The victim keeps 90% of its rate and at most doubles its p99 beside a neighbour held to a quarter of the disk.
  [NOISY_NEIGHBOUR_ID]: { victimIopsRatio: { min: 0.9 }, victimP99Ratio: { max: 2 } },
  [RESERVATION_FLOOR_ID]: { floorRatio: { min: 0.9 } },
  // Admitting a tenth more than measured is measurement noise; more is a promise the disk cannot keep.
  // Admitting nothing keeps every promise by making none: at least one reservation must be admitted.
  [ADMISSION_ID]: { refusedBeyondCapability: { min: 1 }, admittedRatio: { max: 1.1 }, admittedVolumes: { min: 1 } },
};
