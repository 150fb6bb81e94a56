// Profiles: the thresholds checks are judged by, in a YAML or JSON file that
// vendors edit. Read at the edge and validated; never trusted as typed.

import type { Threshold } from "../report/types.js";

/** Thresholds by check id, then by figure name. */
export interface Profile {
  name: string;
  /** Where it was read from ("" for the built-in default). */
  path: string;
  thresholds: Readonly<Record<string, Readonly<Record<string, Threshold>>>>;
}
