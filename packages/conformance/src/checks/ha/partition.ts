// ha.partition: the serving node is cut off while a writer on it goes on; the
// volume is taken over elsewhere and a second writer writes the same blocks
// there. No write may be acknowledged on the old side once the new
// attachment exists (before or after the partition heals); no write of the
// old side may land over what the new side acknowledged; and every write the
// old side acknowledged before must be on the new side: no split brain.

import type { Check, CheckContext, CheckOutcome } from "../check.js";
import { haVolume, nbdUriOf, otherNode, sleep, takeOver } from "./common.js";
import { ackSeries, startHaLoad } from "./load.js";

async function run(ctx: CheckContext): Promise<CheckOutcome> {
  const ready = await haVolume(ctx);
  if (ready.short) return ready.short;
  const { name, attached, kept } = ready;
  const cut = attached.nodeId;
  const next = otherNode(ctx.target, [cut]);
  // The writer reaches the old node locally (its unix socket), as an application on that node would: the partition cuts the node off the others, not from it.
  const old = await startHaLoad(ctx, nbdUriOf(attached.dataPath), { reconnect: false });
  const marks: { atMs: number; label: string; kind: "fault" | "recovered" | "info" }[] = [];
  let current = attached;
  let fresh: Awaited<ReturnType<typeof startHaLoad>> | null = null;
  try {
    await sleep(ctx.timing.faultWindowS * 1000, ctx.signal);
    ctx.progress.step(`partitioning ${cut}, the serving node`);
    const cutAt = Date.now();
    marks.push({ atMs: cutAt, label: `partition ${cut}`, kind: "fault" });
    await ctx.target.faults.partition(cut);
    ctx.progress.step(`taking the volume over on ${next}`);
    const ackedBeforeTakeover = old.stats().acked;
    current = await takeOver(ctx, name, next);
    const takenOverAt = Date.now();
    // From here on the new epoch is in force: every write the old side acknowledges is split brain.
    // (Acks between the call and its reply are not counted here; the new side's ledger catches any that landed.)
    const ackedAtTakeover = old.stats().acked;
    old.ledger.fence();
    marks.push({ atMs: takenOverAt, label: `attached on ${next}`, kind: "info" });
    fresh = await startHaLoad(ctx, nbdUriOf(current.dataPath), { reconnect: false });
    await sleep(ctx.timing.faultWindowS * 1000, ctx.signal);
    ctx.progress.step(`healing ${cut}; both writers keep going`);
    marks.push({ atMs: Date.now(), label: `heal ${cut}`, kind: "recovered" });
    await ctx.target.faults.restore(cut);
    await sleep(ctx.timing.faultWindowS * 1000, ctx.signal);
    await old.stop();
    await fresh.stop();
    const oldAcks = old.stats().acked - ackedAtTakeover;
    ctx.progress.step("verifying both writers' acknowledged writes on the new node");
    const newUri = nbdUriOf(current.dataPath);
    const vNew = await fresh.verify(newUri);
    const newLedger = fresh.ledger;
    const vOld = await old.verify(newUri, (offsetBytes) => newLedger.history(offsetBytes) === undefined);
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
          value: vOld.lostWrites + vNew.lostWrites,
          unit: "count",
          better: "lower",
          description: "acknowledged writes (old side before the takeover, new side after) the new side does not hold",
        },
        { name: "takeoverMs", value: takenOverAt - cutAt, unit: "ms", better: "lower" },
        {
          name: "oldSideAcksDuringTakeover",
          value: ackedAtTakeover - ackedBeforeTakeover,
          unit: "count",
          better: "none",
          description: "acknowledged by the cut-off node while the takeover call ran",
        },
        { name: "newSideWritesAcked", value: fresh.stats().acked, unit: "count", better: "higher" },
        { name: "oldSideWritesRefused", value: old.stats().failed, unit: "count", better: "none" },
        kept.figure,
      ],
      series: [ackSeries(old, marks), { ...ackSeries(fresh, []), name: "acknowledged writes per second on the new node" }],
      violations: [...vOld.examples.slice(0, 3), ...vNew.examples.slice(0, 3)],
      notes: [
        `writer on ${cut} through its local socket; ${cut} partitioned, volume taken over on ${next} where a second writer wrote the same blocks, then ${cut} healed`,
      ],
    };
  } finally {
    await old.stop();
    await fresh?.stop();
    await ctx.target.faults.restore(cut).catch(() => undefined);
    await current.detach().catch(() => undefined);
    await attached.detach().catch(() => undefined);
  }
}

export const partition: Check = {
  id: "ha.partition",
  family: "ha",
  title: "Partition of the serving node (no split brain)",
  measures:
    "writes the cut-off node acknowledged after the takeover (must be 0), and writes lost across partition, takeover, a second writer on the new node and heal",
  needs: ["replication", "fault-partition-node"],
  minNodes: 3,
  run,
};
