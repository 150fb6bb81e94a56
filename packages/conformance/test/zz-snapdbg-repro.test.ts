import { execSync } from "node:child_process";
import fs from "node:fs";
import { it } from "vitest";
import { runChecks } from "../src/checks/runner.js";
import { SNAPSHOT_CHECKS, SNAPSHOT_DEFAULT_THRESHOLDS } from "../src/checks/snapshot/index.js";
import { startLocalTarget } from "../src/target/local.js";

it("repro", async () => {
  const dir = "/tmp/snapdbg/run";
  fs.rmSync(dir, { recursive: true, force: true });
  const t = await startLocalTarget({ nodes: 1, dir });
  try {
    const ids = (process.env.IDS ?? "snapshot.restore").split(",");
    const res = await runChecks({
      target: t,
      checks: SNAPSHOT_CHECKS.filter((c) => ids.includes(c.id)),
      profile: { name: "d", path: "", thresholds: SNAPSHOT_DEFAULT_THRESHOLDS },
      duration: "short",
      faults: 0,
      workDir: "/tmp/snapdbg/work",
    });
    for (const r of res) console.log(r.id, r.verdict, r.message);
  } finally {
    console.log(
      execSync(
        `find ${dir} -maxdepth 3 | head -30; for f in $(find ${dir} -name '*.log'); do echo == $f; tail -30 $f; done; true`,
      ).toString(),
    );
    await t.close();
  }
});
