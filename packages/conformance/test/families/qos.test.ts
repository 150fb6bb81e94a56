// The qos family against the real local target (root, fio, etcd), and the
// negative test the family owes: a target that accepts QoS and silently
// enforces none must fail qos.limit-accuracy, with a message saying what was
// expected and what was measured. (The latency family's tests are in
// latency.test.ts.)

import fs from "node:fs";
import os from "node:os";
import path from "node:path";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { QOS_CHECKS, QOS_DEFAULT_THRESHOLDS } from "../../src/checks/qos/index.js";
import { LIMIT_ACCURACY_ID } from "../../src/checks/qos/limit-accuracy.js";
import { runChecks } from "../../src/checks/runner.js";
import type { Profile } from "../../src/profile/profile.js";
import { startLocalTarget } from "../../src/target/local.js";
import type { ProvisionRequest, Target } from "../../src/target/target.js";
import { canRun } from "../../src/testing/env.js";
import { broken, printResults } from "../helpers/broken-target.js";

const NEEDS = { root: true, tools: ["fio", "etcd"] };
const PROFILE: Profile = { name: "default", path: "", thresholds: QOS_DEFAULT_THRESHOLDS };

/**
 * A target that takes QoS and enforces none: provision drops the request's
 * qos and setQos does nothing, while the target still claims qos-limits.
 */
function ignoringQos(target: Target): Target {
  return broken(target, {
    provision: ({ qos: _dropped, ...request }: ProvisionRequest) => target.provision(request),
    setQos: async () => undefined,
  });
}

describe.runIf(canRun(NEEDS, "qos family on the local target"))("qos on the local target", () => {
  let target: Target;
  let dir: string;

  beforeAll(async () => {
    dir = fs.mkdtempSync(path.join(os.tmpdir(), "keelson-qos-"));
    target = await startLocalTarget({ nodes: 1, dir: path.join(dir, "target") });
  });

  afterAll(async () => {
    await target?.close();
    fs.rmSync(dir, { recursive: true, force: true });
  });

  const run = (t: Target, ids: readonly string[]) =>
    runChecks({
      target: t,
      checks: QOS_CHECKS.filter((c) => ids.includes(c.id)),
      profile: PROFILE,
      duration: "short",
      faults: 0,
      workDir: path.join(dir, "work"),
    });

  it("a target that ignores its QoS limits fails qos.limit-accuracy, saying what was expected and what was measured", async () => {
    const [result] = await run(ignoringQos(target), [LIMIT_ACCURACY_ID]);
    printResults(result ? [result] : []);
    expect(result?.verdict).toBe("fail");
    // Every limit was set at a quarter of the unlimited rate, so each ratio is about 4.
    for (const kind of ["readIops", "writeIops", "totalIops", "readMiBPerSec", "writeMiBPerSec"]) {
      expect(result?.message).toMatch(
        new RegExp(`${kind}Ratio: expected >= 0\\.9 ratio and <= 1\\.1 ratio, measured [\\d.]+ ratio`),
      );
      const ratio = result?.figures.find((f) => f.name === `${kind}Ratio`);
      expect(ratio?.verdict).toBe("fail");
      expect(ratio?.value).toBeGreaterThan(2);
    }
  });
});

// The passing runs of every qos check, on 1 and 3 replicas, are in test/suite.test.ts.
