// The ha family's negative tests: a target that keeps one replica when asked
// for three, and a data path that acknowledges every 100th write without
// making it, must each fail the checks, saying what was expected and what was
// measured. (The passing run is in test/suite.test.ts.)

import fs from "node:fs";
import os from "node:os";
import path from "node:path";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { HA_CHECKS, HA_DEFAULT_THRESHOLDS } from "../../src/checks/ha/index.js";
import { runChecks } from "../../src/checks/runner.js";
import type { Profile } from "../../src/profile/profile.js";
import { startLocalTarget } from "../../src/target/local.js";
import type { ProvisionRequest, Target } from "../../src/target/target.js";
import { canRun } from "../../src/testing/env.js";
import type { LossyNbdProxy } from "../../src/testing/lossy-nbd-proxy.js";
import { attachThroughProxy, broken } from "../helpers/broken-target.js";

const PROFILE: Profile = { name: "default", path: "", thresholds: HA_DEFAULT_THRESHOLDS };

describe.runIf(canRun({ root: true, tools: ["etcd", "ip"] }, "ha family negative tests"))(
  "ha family against broken targets",
  () => {
    let target: Target;
    let dir: string;

    beforeAll(async () => {
      dir = fs.mkdtempSync(path.join(os.tmpdir(), "keelson-conformance-ha-"));
      target = await startLocalTarget({ nodes: 3, dir: path.join(dir, "target") });
    });

    afterAll(async () => {
      await target?.close();
      fs.rmSync(dir, { recursive: true, force: true });
    });

    const run = (t: Target, ids: string[]) =>
      runChecks({
        target: t,
        checks: HA_CHECKS.filter((c) => ids.includes(c.id)),
        profile: PROFILE,
        duration: "short",
        // One fault of each kind: fewer leaves the campaign not applicable.
        faults: 3,
        workDir: path.join(dir, "work"),
        seed: 3,
      });

    it("replicas 1 under ha: a target that keeps one replica when asked for three fails every ha check, naming 3 expected and 1 measured", async () => {
      const oneReplica = broken(target, {
        provision: (request: ProvisionRequest) => target.provision({ ...request, replicas: 1 }),
      });
      const results = await run(
        oneReplica,
        HA_CHECKS.map((c) => c.id),
      );
      for (const r of results) {
        expect(r.verdict, `${r.id}: ${r.message}`).toBe("fail");
        expect(r.message).toMatch(/replicasKept: expected >= 3 count, measured 1 count/);
        expect(r.message).toMatch(/asked for 3 replicas, the target keeps 1/);
      }
    });

    it("a data path that acknowledges every 100th write without making it fails ha.replica-loss with the writes lost, as expected 0 and measured", async () => {
      const proxies: LossyNbdProxy[] = [];
      const lossy = broken(target, {
        attach: attachThroughProxy(target, dir, { dropEveryNthWrite: 100 }, proxies),
      });
      const [result] = await run(lossy, ["ha.replica-loss"]);
      expect(proxies[0]?.writesDropped ?? 0).toBeGreaterThan(0);
      expect(result?.verdict, result?.message).toBe("fail");
      expect(result?.message).toMatch(/lostWrites: expected <= 0 count, measured [1-9]\d* count/);
      expect(result?.message).toMatch(/block at offset \d+ \(lost\): expected seq \d+/);
      console.log(`lossy data path: ${proxies[0]?.writesDropped} writes dropped; ${result?.message.slice(0, 400)}`);
    });
  },
);
