// The snapshot family against the real local target (root, etcd, nbdfuse),
// and the negative test the family owes: a target whose snapshots are really
// the live volume must fail the checks that read snapshots, with messages
// saying what was expected and what was measured.

import fs from "node:fs";
import os from "node:os";
import path from "node:path";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import type { Check } from "../../src/checks/check.js";
import { formatValue } from "../../src/checks/judge.js";
import { runChecks } from "../../src/checks/runner.js";
import { SNAPSHOT_CHECKS, SNAPSHOT_DEFAULT_THRESHOLDS } from "../../src/checks/snapshot/index.js";
import type { Profile } from "../../src/profile/profile.js";
import type { CheckResult } from "../../src/report/types.js";
import { startLocalTarget } from "../../src/target/local.js";
import type { AccessMode, SnapshotId, Target } from "../../src/target/target.js";
import { canRun } from "../../src/testing/env.js";
import { broken } from "../helpers/broken-target.js";

const NEEDS = { root: true, tools: ["etcd", "nbdfuse"] };
const PROFILE: Profile = { name: "default", path: "", thresholds: SNAPSHOT_DEFAULT_THRESHOLDS };
const SEED = Number(process.env.KEELSON_SEED ?? Date.now() % 1_000_000);

/** A target whose `attachSnapshot` attaches the live volume: every snapshot reads as the volume does now. */
function snapshotsAreLive(target: Target): Target {
  return broken(target, {
    attachSnapshot: (snapshot: SnapshotId, mode?: AccessMode) =>
      target.attach({ volume: snapshot.volume, readOnly: true, ...(mode ? { mode } : {}) }),
  });
}

/** One line per figure, for the log: the figures are the point of the suite. */
function printResults(results: readonly CheckResult[]): void {
  const lines: string[] = [`seed ${SEED}`];
  for (const r of results) {
    lines.push(`${r.id}: ${r.verdict} (${r.durationMs} ms)${r.message ? ` - ${r.message.slice(0, 2000)}` : ""}`);
    for (const f of r.figures) {
      const bound = f.threshold ? ` [${f.threshold.min ?? ""}..${f.threshold.max ?? ""}]` : "";
      lines.push(`  ${f.name.padEnd(28)} ${formatValue(f.value).padStart(10)} ${f.unit}${bound} ${f.verdict}`);
    }
  }
  console.log(lines.join("\n"));
}

const ids = (...names: string[]) => SNAPSHOT_CHECKS.filter((c) => names.includes(c.id));

function figureOf(result: CheckResult | undefined, name: string) {
  const f = result?.figures.find((x) => x.name === name);
  if (!f) throw new Error(`${result?.id} has no figure ${name}: ${JSON.stringify(result)}`);
  return f;
}

describe.runIf(canRun(NEEDS, "snapshot family on the local target"))("snapshot family on a one-node local target", () => {
  let target: Target;
  let dir: string;

  beforeAll(async () => {
    dir = fs.mkdtempSync(path.join(os.tmpdir(), "keelson-snapshot-"));
    target = await startLocalTarget({ nodes: 1, dir: path.join(dir, "target") });
  });

  afterAll(async () => {
    await target?.close();
    if (dir) fs.rmSync(dir, { recursive: true, force: true });
  });

  const run = (t: Target, checks: readonly Check[]) =>
    runChecks({ target: t, checks, profile: PROFILE, duration: "short", faults: 0, workDir: path.join(dir, "work"), seed: SEED });

  it("snapshots that read the live volume: byte-exact, clone-independence and chain fail, saying what was expected and what was found", async () => {
    const results = await run(
      snapshotsAreLive(target),
      ids("snapshot.byte-exact", "snapshot.clone-independence", "snapshot.chain"),
    );
    printResults(results);
    const byId = (id: string) => results.find((r) => r.id === id);
    const [byteExact, clones, chain] = [byId("snapshot.byte-exact"), byId("snapshot.clone-independence"), byId("snapshot.chain")];

    expect(byteExact?.verdict, byteExact?.message).toBe("fail");
    expect(figureOf(byteExact, "wrongChunks").value).toBeGreaterThan(0);
    expect(figureOf(byteExact, "wrongChunks").verdict).toBe("fail");
    // The live volume holds writes sent after every snapshot call but the last returned.
    expect(byteExact?.message).toMatch(
      /snapshot under-load-0 .*chunk \d+: expected v\d+(\.\.v\d+)? \(.*\), found v\d+, sent \d+ ms after the call returned/,
    );
    expect(byteExact?.message).toMatch(/wrongChunks: expected <= 0 count, measured \d+ count/);

    expect(clones?.verdict, clones?.message).toBe("fail");
    expect(figureOf(clones, "snapshotWrongBlocks").value).toBe(320);
    expect(figureOf(clones, "sourceWrongBlocks").value).toBe(0);
    expect(figureOf(clones, "cloneWrongBlocks").value).toBe(0);
    expect(clones?.message).toMatch(
      /the snapshot \(expected A only\): 320 of 1024 blocks .*block 0: expected stream 10 unit 0 v0, found stream 11 unit 0 v0/,
    );

    expect(chain?.verdict, chain?.message).toBe("fail");
    expect(figureOf(chain, "snapshotsVerified").value).toBeLessThan(64);
    expect(chain?.message).toMatch(
      /snapshot round-1: \d+ of 512 blocks .* expected stream 50337 unit \d+ v\d+, found stream 50337 unit \d+ v\d+/,
    );
    expect(chain?.message).toMatch(/snapshotsVerified: expected >= 64 count, measured \d+ count/);
  });

  it("keelson passes every snapshot check on one node; the replicated one is not applicable there", async () => {
    const results = await run(target, SNAPSHOT_CHECKS);
    printResults(results);
    for (const r of results) {
      if (r.id === "snapshot.byte-exact-replicated") {
        expect(r.verdict, r.message).toBe("not-applicable");
        continue;
      }
      expect(r.verdict, `${r.id}: ${r.message}`).toBe("pass");
      for (const f of r.figures) expect(Number.isFinite(f.value), `${r.id} ${f.name}`).toBe(true);
    }
    expect(
      figureOf(
        results.find((r) => r.id === "snapshot.byte-exact"),
        "racedChunks",
      ).value,
    ).toBeGreaterThan(0);
    expect(
      figureOf(
        results.find((r) => r.id === "snapshot.chain"),
        "snapshotsVerified",
      ).value,
    ).toBe(64);
  });
});

// The replicated snapshot check's passing run is in test/suite.test.ts (three nodes).
