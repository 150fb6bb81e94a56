// ha.replica-loss: a replica's node dies under a verified writer. The writer
// must see at most a stall, never an error or a lost write.

import type { Check, CheckContext, CheckOutcome } from "../check.js";
import { haVolume, nbdUriOf, replicaVictim, sleep } from "./common.js";
import { ackSeries, startHaLoad } from "./load.js";

async function run(ctx: CheckContext): Promise<CheckOutcome> {
  const ready = await haVolume(ctx);
  if (ready.short) return ready.short;
  const { name, attached, kept } = ready;
  const uri = nbdUriOf(attached.dataPath);
  const victim = replicaVictim(ctx.target, attached.nodeId, kept.replicaNodes);
  const load = await startHaLoad(ctx, uri);
  try {
    ctx.progress.step(`ledger writer on ${attached.nodeId}; ${ctx.timing.faultWindowS} s before the fault`);
    await sleep(ctx.timing.faultWindowS * 1000, ctx.signal);
    const killedAt = Date.now();
    ctx.progress.step(`kill -9 of ${victim}'s storage process (a replica)`);
    await ctx.target.faults.killStorageProcess(victim);
    await sleep(ctx.timing.faultWindowS * 1000, ctx.signal);
    // The window ends before the writer stops: its last flush and close are no stall.
    const windowEndAt = Date.now();
    await load.stop();
    const stallMs = load.maxAckGapMs(killedAt - 1000, windowEndAt);
    ctx.progress.step("verifying every acknowledged write");
    const v = await load.verify(uri);
    const stats = load.stats();
    return {
      figures: [
        {
          name: "stallMs",
          value: stallMs,
          unit: "ms",
          better: "lower",
          description: "longest time without an acknowledged write around the kill",
        },
        {
          name: "lostWrites",
          value: v.lostWrites,
          unit: "count",
          better: "lower",
          description: "acknowledged writes not read back",
        },
        { name: "writeErrors", value: stats.failed, unit: "count", better: "lower", description: "writes the target refused" },
        { name: "writesAcked", value: stats.acked, unit: "count", better: "higher" },
        { name: "blocksVerified", value: v.blocksChecked, unit: "count", better: "none" },
        kept.figure,
      ],
      series: [ackSeries(load, [{ atMs: killedAt, label: `kill -9 ${victim}`, kind: "fault" }])],
      violations: v.examples.slice(0, 3),
      notes: [`${victim} (a replica) killed while ${attached.nodeId} served the volume`],
    };
  } finally {
    await load.stop();
    await ctx.target.faults.restore(victim).catch(() => undefined);
    await attached.detach().catch(() => undefined);
    void name;
  }
}

export const replicaLoss: Check = {
  id: "ha.replica-loss",
  family: "ha",
  title: "Replica lost under a verified writer",
  measures: "stall (ms) and acknowledged writes lost when a replica's node is killed -9 under a ledger writer",
  needs: ["replication", "fault-kill-storage-process"],
  minNodes: 3,
  run,
};
