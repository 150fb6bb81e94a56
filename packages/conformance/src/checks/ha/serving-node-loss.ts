// ha.serving-node-loss: the node serving the volume dies; the volume is
// attached on another node and the writer goes on there. RTO is measured from
// the kill to the first write acknowledged on the new node.

import type { Check, CheckContext, CheckOutcome } from "../check.js";
import { compareReplicas, HA_VOLUME_BYTES, haVolume, nbdUriOf, otherNode, sleep, takeOver, waitHealthy } from "./common.js";
import { ackSeries, startHaLoad } from "./load.js";

async function run(ctx: CheckContext): Promise<CheckOutcome> {
  const ready = await haVolume(ctx);
  if (ready.short) return ready.short;
  const { name, attached, kept } = ready;
  const load = await startHaLoad(ctx, nbdUriOf(attached.dataPath));
  const lost = attached.nodeId;
  const next = otherNode(ctx.target, [lost]);
  const marks: { atMs: number; label: string; kind: "fault" | "recovered" | "info" }[] = [];
  let current = attached;
  try {
    await sleep(ctx.timing.faultWindowS * 1000, ctx.signal);
    const killedAt = Date.now();
    ctx.progress.step(`killing ${lost}, the node serving the volume`);
    marks.push({ atMs: killedAt, label: `kill ${lost}`, kind: "fault" });
    await ctx.target.faults.killServingNode(name);
    ctx.progress.step(`attaching on ${next} (takeover)`);
    current = await takeOver(ctx, name, next);
    marks.push({ atMs: Date.now(), label: `attached on ${next}`, kind: "info" });
    await load.switchTo(nbdUriOf(current.dataPath));
    const firstAck = await load.waitFirstAckAfter(killedAt, 60_000);
    marks.push({ atMs: firstAck, label: "first write acknowledged", kind: "recovered" });
    await sleep(ctx.timing.faultWindowS * 1000, ctx.signal);
    await load.stop();
    ctx.progress.step("verifying every acknowledged write on the new node");
    const v = await load.verify(nbdUriOf(current.dataPath));
    ctx.progress.step(`${lost} returns; waiting for every replica in sync`);
    await ctx.target.faults.restore(lost);
    await waitHealthy(ctx.target, name, ctx.signal);
    const cmp = await compareReplicas(ctx.target, name, HA_VOLUME_BYTES);
    return {
      figures: [
        {
          name: "rtoMs",
          value: firstAck - killedAt,
          unit: "ms",
          better: "lower",
          description: "from the kill to the first write acknowledged on the new node",
        },
        {
          name: "lostWrites",
          value: v.lostWrites,
          unit: "count",
          better: "lower",
          description: "acknowledged writes not read back on the new node",
        },
        { name: "replicaMismatchMiB", value: cmp.mismatchedMiB, unit: "MiB", better: "lower" },
        { name: "writesAcked", value: load.stats().acked, unit: "count", better: "higher" },
        { name: "blocksVerified", value: v.blocksChecked, unit: "count", better: "none" },
        kept.figure,
      ],
      series: [ackSeries(load, marks)],
      violations: [...v.examples.slice(0, 3), ...cmp.detail],
      notes: [`${lost} killed while serving; re-attached on ${next}; ${lost} rebuilt on return`],
    };
  } finally {
    await load.stop();
    await ctx.target.faults.restore(lost).catch(() => undefined);
    await current.detach().catch(() => undefined);
    if (current !== attached) await attached.detach().catch(() => undefined);
  }
}

export const servingNodeLoss: Check = {
  id: "ha.serving-node-loss",
  family: "ha",
  title: "Serving node lost, re-attach elsewhere",
  measures: "RTO (ms, kill to first acknowledged write on the new node) and acknowledged writes lost when the serving node dies",
  needs: ["replication", "fault-kill-serving-node", "read-replicas"],
  minNodes: 3,
  run,
};
