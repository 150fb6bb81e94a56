// ha.partition: the serving node is cut off while a writer on it goes on; the
// volume is taken over elsewhere. No write may be acknowledged on the old side
// once the new attachment exists (before or after the partition heals), and
// every write acknowledged before must be on the new side: no split brain.

import type { Check, CheckContext, CheckOutcome } from "../check.js";
import { nbdUriOf, otherNode, replicasKept, replicatedVolume, sleep, takeOver } from "./common.js";
import { ackSeries, startHaLoad } from "./load.js";

async function run(ctx: CheckContext): Promise<CheckOutcome> {
  const { name, attached } = await replicatedVolume(ctx, "vol");
  const kept = await replicasKept(ctx, name);
  if (kept.short) {
    await attached.detach().catch(() => undefined);
    return kept.short;
  }
  const cut = attached.nodeId;
  const next = otherNode(ctx.target, [cut]);
  // The writer reaches the old node locally (its unix socket), as an application on that node would: the partition cuts the node off the others, not from it.
  const old = await startHaLoad(ctx, nbdUriOf(attached.dataPath), { reconnect: false });
  const marks: { atMs: number; label: string; kind: "fault" | "recovered" | "info" }[] = [];
  let current = attached;
  try {
    await sleep(ctx.timing.faultWindowS * 1000, ctx.signal);
    ctx.progress.step(`partitioning ${cut}, the serving node`);
    marks.push({ atMs: Date.now(), label: `partition ${cut}`, kind: "fault" });
    await ctx.target.faults.partition(cut);
    ctx.progress.step(`taking the volume over on ${next}`);
    current = await takeOver(ctx, name, next);
    const takenOverAt = Date.now();
    // From here on the new epoch is in force: every write the old side acknowledges is split brain.
    const ackedAtTakeover = old.stats().acked;
    marks.push({ atMs: takenOverAt, label: `attached on ${next}`, kind: "info" });
    await sleep(ctx.timing.faultWindowS * 1000, ctx.signal);
    ctx.progress.step(`healing ${cut}; its writer keeps going`);
    marks.push({ atMs: Date.now(), label: `heal ${cut}`, kind: "recovered" });
    await ctx.target.faults.restore(cut);
    await sleep(ctx.timing.faultWindowS * 1000, ctx.signal);
    await old.stop();
    const oldAcks = old.stats().acked - ackedAtTakeover;
    ctx.progress.step("verifying the old side's acknowledged writes on the new node");
    const v = await old.verify(nbdUriOf(current.dataPath));
    return {
      figures: [
        {
          name: "oldSideAcksAfterTakeover",
          value: oldAcks,
          unit: "count",
          better: "lower",
          description: "writes the cut-off node acknowledged after the volume was attached elsewhere",
        },
        {
          name: "lostWrites",
          value: v.lostWrites,
          unit: "count",
          better: "lower",
          description: "writes acknowledged on the old side that the new side does not hold",
        },
        { name: "takeoverMs", value: takenOverAt - (marks[0]?.atMs ?? takenOverAt), unit: "ms", better: "lower" },
        { name: "oldSideWritesRefused", value: old.stats().failed, unit: "count", better: "none" },
        kept.figure,
      ],
      series: [ackSeries(old, marks)],
      violations: v.examples.slice(0, 3),
      notes: [`writer on ${cut} through its local socket; ${cut} partitioned, volume taken over on ${next}, then ${cut} healed`],
    };
  } finally {
    await old.stop();
    await ctx.target.faults.restore(cut).catch(() => undefined);
    await current.detach().catch(() => undefined);
  }
}

export const partition: Check = {
  id: "ha.partition",
  family: "ha",
  title: "Partition of the serving node (no split brain)",
  measures:
    "writes the cut-off node acknowledged after the takeover (must be 0) and writes lost across partition, takeover and heal",
  needs: ["replication", "fault-partition-node"],
  minNodes: 3,
  run,
};
