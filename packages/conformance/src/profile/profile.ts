// Profiles: the thresholds checks are judged by, in a YAML or JSON file that
// vendors edit. Read at the edge and validated; never trusted as typed.

import type { Threshold } from "../report/types.js";

/** Thresholds by check id, then by figure name. */
export interface Profile {
  name: string;
  /** Where it was read from ("" for the built-in default). */
  path: string;
  thresholds: Readonly<Record<string, Readonly<Record<string, Threshold>>>>;
  /**
   * Checks the vendor knows its storage fails today, each with the issue
   * that tracks the fix. They are judged exactly as any other; a failure is
   * marked known in the report and does not fail the run's exit code; a pass
   * is reported as such (then the entry can go).
   */
  knownFailures?: Readonly<Record<string, { issue: string; reason: string }>>;
}
