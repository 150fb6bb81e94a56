// ha.rebuild: a replica misses writes while down, returns, and is rebuilt
// under load; the rate is measured and the replicas compared byte for byte.

import type { Check, CheckContext, CheckOutcome } from "../check.js";
import { compareReplicas, HA_VOLUME_BYTES, haVolume, MIB, nbdUriOf, replicaVictim, sleep, waitHealthy } from "./common.js";
import { ackSeries, startHaLoad } from "./load.js";

async function run(ctx: CheckContext): Promise<CheckOutcome> {
  const ready = await haVolume(ctx);
  if (ready.short) return ready.short;
  const { name, attached, kept } = ready;
  const uri = nbdUriOf(attached.dataPath);
  const victim = replicaVictim(ctx.target, attached.nodeId, kept.replicaNodes);
  const load = await startHaLoad(ctx, uri);
  const marks: { atMs: number; label: string; kind: "fault" | "recovered" | "info" }[] = [];
  try {
    await sleep(1000, ctx.signal);
    ctx.progress.step(`kill -9 of ${victim}; it misses ${ctx.timing.faultWindowS} s of writes`);
    marks.push({ atMs: Date.now(), label: `kill -9 ${victim}`, kind: "fault" });
    await ctx.target.faults.killStorageProcess(victim);
    await sleep(ctx.timing.faultWindowS * 1000, ctx.signal);
    ctx.progress.step(`${victim} returns; rebuilding under load`);
    const returnedAt = Date.now();
    marks.push({ atMs: returnedAt, label: `${victim} back`, kind: "info" });
    await ctx.target.faults.restore(victim);
    const healed = await waitHealthy(ctx.target, name, ctx.signal);
    const healedAt = Date.now();
    marks.push({ atMs: healedAt, label: "in sync", kind: "recovered" });
    await load.stop();
    ctx.progress.step("comparing replicas byte for byte; verifying the ledger");
    const cmp = await compareReplicas(ctx.target, name, HA_VOLUME_BYTES);
    const v = await load.verify(uri);
    const rebuilt = healed.lastRebuild;
    // A target that does not report its rebuild leaves the rate unmeasured (the judge says so), never guessed.
    const rateMiBps = rebuilt && rebuilt.durationMs > 0 ? rebuilt.bytes / MIB / (rebuilt.durationMs / 1000) : Number.NaN;
    return {
      figures: [
        {
          name: "rebuildMiBps",
          value: rateMiBps,
          unit: "MiB/s",
          better: "higher",
          description: "bytes the rebuild copied over its duration, as the target reports them",
        },
        { name: "rebuildBytes", value: rebuilt?.bytes ?? Number.NaN, unit: "bytes", better: "none" },
        {
          name: "timeToInSyncMs",
          value: healedAt - returnedAt,
          unit: "ms",
          better: "lower",
          description: "from the node's return to every replica in sync",
        },
        {
          name: "replicaMismatchMiB",
          value: cmp.mismatchedMiB,
          unit: "MiB",
          better: "lower",
          description: "MiB that differ between replicas after the rebuild",
        },
        { name: "replicasCompared", value: cmp.replicas, unit: "count", better: "higher" },
        { name: "lostWrites", value: v.lostWrites, unit: "count", better: "lower" },
        kept.figure,
      ],
      series: [ackSeries(load, marks)],
      violations: [...cmp.detail, ...v.examples.slice(0, 3)],
      notes: [`${victim} missed writes for ${ctx.timing.faultWindowS} s and was rebuilt while the writer went on`],
    };
  } finally {
    await load.stop();
    await ctx.target.faults.restore(victim).catch(() => undefined);
    await attached.detach().catch(() => undefined);
  }
}

export const rebuild: Check = {
  id: "ha.rebuild",
  family: "ha",
  title: "Rebuild of a returning replica",
  measures: "rebuild rate (MiB/s) and time to in-sync of a replica that missed writes; replicas compared byte for byte",
  needs: ["replication", "fault-kill-storage-process", "read-replicas"],
  minNodes: 3,
  run,
};
