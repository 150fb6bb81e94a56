// A CheckContext for unit tests of a check's own logic: a silent progress, a
// seeded random, the short timing, and only the target methods a test gives.

import fs from "node:fs";
import os from "node:os";
import path from "node:path";
import { afterAll } from "vitest";
import type { Profile } from "../../profile/profile.js";
import type { Target } from "../../target/target.js";
import { SILENT_PROGRESS } from "../../ui/progress.js";
import { type CheckContext, TIMING } from "../check.js";
import { seededRandom } from "../random.js";

/** Scratch directories of fake contexts, removed after the test file (a check writes fio job files there). */
const scratch: string[] = [];
afterAll(() => {
  for (const dir of scratch.splice(0)) fs.rmSync(dir, { recursive: true, force: true });
});

/** A context whose target has only the methods in `target` (any other call throws); `overrides` replace the rest. */
export function fakeContext(target: Partial<Target> = {}, overrides: Partial<CheckContext> = {}): CheckContext {
  const profile: Profile = { name: "test", path: "", thresholds: {} };
  const only = new Proxy(target as Target, {
    get(real, property) {
      if (property in real) return Reflect.get(real, property, real);
      return () => {
        throw new Error(`fake target has no ${String(property)}`);
      };
    },
  });
  return {
    target: only,
    profile,
    duration: "short",
    timing: TIMING.short,
    faults: 0,
    workDir: (() => {
      const dir = fs.mkdtempSync(path.join(os.tmpdir(), "kc-fake-"));
      scratch.push(dir);
      return dir;
    })(),
    progress: SILENT_PROGRESS,
    signal: new AbortController().signal,
    random: seededRandom(1),
    volumeName: (suffix) => `test-${suffix}`,
    ...overrides,
  };
}
