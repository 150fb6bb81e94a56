// The snapshot family: what a snapshot, clone, revert and delete must keep,
// checked byte for byte with self-describing payloads.

import type { Threshold } from "../../report/types.js";
import type { Check } from "../check.js";
import { BYTE_EXACT_CHECK, BYTE_EXACT_REPLICATED_CHECK, BYTE_EXACT_THRESHOLDS } from "./byte-exact.js";
import { CHAIN_CHECK, CHAIN_THRESHOLDS } from "./chain.js";
import { CLONE_INDEPENDENCE_CHECK, CLONE_INDEPENDENCE_THRESHOLDS } from "./clone-independence.js";
import { DELETE_WHILE_CLONED_CHECK, DELETE_WHILE_CLONED_THRESHOLDS } from "./delete-under-read.js";
import { FS_CRASH_CHECK, FS_CRASH_THRESHOLDS } from "./fs-crash.js";
import { RESTORE_CHECK, RESTORE_THRESHOLDS, REVERT_CHECK, REVERT_THRESHOLDS } from "./restore.js";

/** Every snapshot check, cheapest first. */
export const SNAPSHOT_CHECKS: readonly Check[] = [
  CLONE_INDEPENDENCE_CHECK,
  RESTORE_CHECK,
  REVERT_CHECK,
  BYTE_EXACT_CHECK,
  BYTE_EXACT_REPLICATED_CHECK,
  DELETE_WHILE_CLONED_CHECK,
  CHAIN_CHECK,
  FS_CRASH_CHECK,
];

/** The default profile's bounds for the family: every broken invariant counted must be 0; latencies are reported, not judged. */
export const SNAPSHOT_DEFAULT_THRESHOLDS: Readonly<Record<string, Readonly<Record<string, Threshold>>>> = {
  [BYTE_EXACT_CHECK.id]: BYTE_EXACT_THRESHOLDS,
  [BYTE_EXACT_REPLICATED_CHECK.id]: BYTE_EXACT_THRESHOLDS,
  [CLONE_INDEPENDENCE_CHECK.id]: CLONE_INDEPENDENCE_THRESHOLDS,
  [RESTORE_CHECK.id]: RESTORE_THRESHOLDS,
  [REVERT_CHECK.id]: REVERT_THRESHOLDS,
  [DELETE_WHILE_CLONED_CHECK.id]: DELETE_WHILE_CLONED_THRESHOLDS,
  [CHAIN_CHECK.id]: CHAIN_THRESHOLDS,
  [FS_CRASH_CHECK.id]: FS_CRASH_THRESHOLDS,
};
