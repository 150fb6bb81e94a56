// The latency family against the real local target (root, fio, etcd), and
// the negative test the family owes: a data path that answers every request
// 1.2 s late must fail latency.replicas-1, with a message saying the p99
// expected and the p99 measured. (The passing runs on three replicas are in
// test/suite.test.ts.)

import fs from "node:fs";
import os from "node:os";
import path from "node:path";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { LATENCY_CHECKS, LATENCY_DEFAULT_THRESHOLDS } from "../../src/checks/latency/index.js";
import { runChecks } from "../../src/checks/runner.js";
import { BENCH_PROFILES } from "../../src/fio/profiles.js";
import type { Profile } from "../../src/profile/profile.js";
import { startLocalTarget } from "../../src/target/local.js";
import type { Target } from "../../src/target/target.js";
import { canRun } from "../../src/testing/env.js";
import type { LossyNbdProxy } from "../../src/testing/lossy-nbd-proxy.js";
import { attachThroughProxy, broken, printResults } from "../helpers/broken-target.js";

const NEEDS = { root: true, tools: ["fio", "etcd"] };
const PROFILE: Profile = { name: "default", path: "", thresholds: LATENCY_DEFAULT_THRESHOLDS };
/** Every reply of the slow data path comes this late: past the default p99 bound of one second. */
const REPLY_DELAY_MS = 1200;
/** The default bound on every profile's p99 (see sanityThresholds). */
const P99_BOUND_US = 1_000_000;
/** Least p99 a reply held back REPLY_DELAY_MS can show: fio's latency histogram rounds within a few percent. */
const LEAST_P99_US = REPLY_DELAY_MS * 1000 * 0.97;

/**
 * A target whose data path answers every request `REPLY_DELAY_MS` late: each
 * attach is served through an NBD proxy that holds every reply back (and
 * drops no write), detached with it.
 */
function slowDataPath(real: Target, dir: string, proxies: LossyNbdProxy[]): Target {
  return broken(real, {
    attach: attachThroughProxy(real, dir, { dropEveryNthWrite: 0, delayEveryReplyMs: REPLY_DELAY_MS }, proxies),
  });
}

describe.runIf(canRun(NEEDS, "latency family on the local target"))("latency on a one-node local target", () => {
  let target: Target;
  let dir: string;

  beforeAll(async () => {
    dir = fs.mkdtempSync(path.join(os.tmpdir(), "keelson-latency-"));
    target = await startLocalTarget({ nodes: 1, dir: path.join(dir, "target") });
  });

  afterAll(async () => {
    await target?.close();
    if (dir) fs.rmSync(dir, { recursive: true, force: true });
  });

  const run = (t: Target, ids: readonly string[]) =>
    runChecks({
      target: t,
      checks: LATENCY_CHECKS.filter((c) => ids.includes(c.id)),
      profile: PROFILE,
      duration: "short",
      faults: 0,
      workDir: path.join(dir, "work"),
    });

  it("a data path answering every request 1.2 s late fails latency.replicas-1, each profile's p99 expected <= 1 s and measured about 1.2 s", async () => {
    const proxies: LossyNbdProxy[] = [];
    const [result] = await run(slowDataPath(target, dir, proxies), ["latency.replicas-1"]);
    printResults(result ? [result] : []);
    expect(proxies.length).toBeGreaterThan(0);
    expect(proxies.reduce((n, p) => n + p.writesDropped, 0)).toBe(0);
    expect(result?.verdict, result?.message).toBe("fail");
    for (const profile of BENCH_PROFILES) {
      const p99 = result?.figures.find((f) => f.name === `${profile.name}.p99Us`);
      expect(p99?.verdict, profile.name).toBe("fail");
      expect(p99?.value, profile.name).toBeGreaterThanOrEqual(LEAST_P99_US);
      const said = result?.message.match(
        new RegExp(`${profile.name}\\.p99Us: expected <= ${P99_BOUND_US} us, measured (\\d+(?:\\.\\d+)?) us`),
      );
      expect(said, `${profile.name}: ${result?.message}`).not.toBeNull();
      expect(Number(said?.[1])).toBeGreaterThanOrEqual(LEAST_P99_US);
    }
  });

  it("keelson: a curve per profile on one replica; three replicas are not applicable on one node", async () => {
    const results = await run(
      target,
      LATENCY_CHECKS.map((c) => c.id),
    );
    printResults(results);
    const [r1, r3] = results;
    expect(r1?.verdict, r1?.message).toBe("pass");
    expect(r1?.latency.length).toBe(BENCH_PROFILES.length);
    for (const curve of r1?.latency ?? []) {
      expect(curve.iops).toBeGreaterThan(0);
      expect(curve.percentiles.length).toBeGreaterThan(10);
    }
    expect(r3?.verdict).toBe("not-applicable");
  });
});
