// ha.fault-campaign: `--faults N` random faults in a row under one ledger
// writer: replica kills, serving-node kills and partitions of the serving
// node, each followed by re-attach where needed, return and rebuild. After
// each, the replicas are compared; at the end every acknowledged write is
// checked. Figures: writes lost (must be 0) and the RTO distribution.

import type { AttachedVolume, Capability } from "../../target/target.js";
import type { Check, CheckContext, CheckOutcome } from "../check.js";
import { compareReplicas, HA_VOLUME_BYTES, haVolume, nbdUriOf, otherNode, sleep, takeOver, waitHealthy } from "./common.js";
import { ackSeries, type HaLoad, startHaLoad } from "./load.js";

export type FaultKind = "replica-kill" | "serving-kill" | "serving-partition";

const FAULT_NEEDS: Readonly<Record<FaultKind, Capability>> = {
  "replica-kill": "fault-kill-storage-process",
  "serving-kill": "fault-kill-serving-node",
  "serving-partition": "fault-partition-node",
};

function percentile(sorted: number[], p: number): number {
  if (sorted.length === 0) return Number.NaN;
  return sorted[Math.min(sorted.length - 1, Math.ceil((p / 100) * sorted.length) - 1)] as number;
}

/**
 * `count` faults in random order, the kinds as evenly spread as the count
 * allows: a uniform draw of 10 leaves one kind out now and then, and a
 * campaign that never killed the serving node proves little about it.
 */
export function faultPlan(kinds: readonly FaultKind[], count: number, random: () => number): FaultKind[] {
  const plan = Array.from({ length: count }, (_, i) => kinds[i % kinds.length] as FaultKind);
  for (let i = plan.length - 1; i > 0; i--) {
    const j = Math.floor(random() * (i + 1));
    [plan[i], plan[j]] = [plan[j] as FaultKind, plan[i] as FaultKind];
  }
  return plan;
}

interface Mark {
  atMs: number;
  label: string;
  kind: "fault" | "recovered" | "info";
}

/** One fault and the recovery from it; resolves with the RTO when the volume moved. */
async function inject(
  ctx: CheckContext,
  volume: string,
  kind: FaultKind,
  load: HaLoad,
  serving: string,
  marks: Mark[],
  i: number,
): Promise<{ rtoMs: number | null; serving: string; attached?: AttachedVolume }> {
  const at = Date.now();
  if (kind === "replica-kill") {
    const victim = otherNode(ctx.target, [serving]);
    const candidates = ctx.target.nodeIds().filter((n) => n !== serving);
    const pick = candidates[Math.floor(ctx.random() * candidates.length)] ?? victim;
    marks.push({ atMs: at, label: `#${i} kill ${pick}`, kind: "fault" });
    await ctx.target.faults.killStorageProcess(pick);
    await sleep((ctx.timing.faultWindowS * 1000) / 2, ctx.signal);
    await ctx.target.faults.restore(pick);
    return { rtoMs: null, serving };
  }
  const others = ctx.target.nodeIds().filter((n) => n !== serving);
  const next = others[Math.floor(ctx.random() * others.length)] ?? otherNode(ctx.target, [serving]);
  marks.push({ atMs: at, label: `#${i} ${kind === "serving-kill" ? "kill" : "partition"} ${serving}`, kind: "fault" });
  if (kind === "serving-kill") await ctx.target.faults.killServingNode(volume);
  else await ctx.target.faults.partition(serving);
  const attached = await takeOver(ctx, volume, next);
  await load.switchTo(nbdUriOf(attached.dataPath));
  const firstAck = await load.waitFirstAckAfter(at, 60_000);
  marks.push({ atMs: firstAck, label: `#${i} on ${next}`, kind: "recovered" });
  await ctx.target.faults.restore(serving);
  return { rtoMs: firstAck - at, serving: next, attached };
}

async function run(ctx: CheckContext): Promise<CheckOutcome> {
  const kinds = (Object.keys(FAULT_NEEDS) as FaultKind[]).filter((k) => ctx.target.capabilities.has(FAULT_NEEDS[k]));
  const ready = await haVolume(ctx);
  if (ready.short) return ready.short;
  const { name, attached, kept } = ready;
  let serving = attached.nodeId;
  /** Every attachment made, the first included: detached newest first at the end. */
  const handles: AttachedVolume[] = [attached];
  // Drawn before any load runs, so the same seed replays the same campaign.
  const plan = faultPlan(kinds, ctx.faults, ctx.random);
  const load = await startHaLoad(ctx, nbdUriOf(attached.dataPath));
  const marks: Mark[] = [];
  const rtos: number[] = [];
  const mismatches: string[] = [];
  let mismatchedMiB = 0;
  const counts: Record<FaultKind, number> = { "replica-kill": 0, "serving-kill": 0, "serving-partition": 0 };
  try {
    await sleep(1000, ctx.signal);
    for (let i = 1; i <= ctx.faults && !ctx.signal.aborted; i++) {
      const kind = plan[i - 1] as FaultKind;
      counts[kind]++;
      ctx.progress.step(`fault ${i}/${ctx.faults}: ${kind} (serving: ${serving})`);
      const r = await inject(ctx, name, kind, load, serving, marks, i);
      serving = r.serving;
      if (r.attached) handles.push(r.attached);
      if (r.rtoMs !== null) rtos.push(r.rtoMs);
      await waitHealthy(ctx.target, name, ctx.signal);
      // Replicas are compared with the writer paused: writes in flight legitimately differ.
      await load.pause();
      const cmp = await compareReplicas(ctx.target, name, HA_VOLUME_BYTES);
      load.resume();
      mismatchedMiB += cmp.mismatchedMiB;
      for (const d of cmp.detail) if (mismatches.length < 5) mismatches.push(`after fault ${i} (${kind}): ${d}`);
      await sleep(500, ctx.signal);
    }
    await load.stop();
    ctx.progress.step("verifying every acknowledged write");
    const finalPath = (await ctx.target.health(name)).servingNode;
    const v = await load.verify(load.currentUri());
    const sorted = [...rtos].sort((a, b) => a - b);
    const stats = load.stats();
    return {
      figures: [
        { name: "faults", value: ctx.faults, unit: "count", better: "none" },
        {
          name: "lostWrites",
          value: v.lostWrites,
          unit: "count",
          better: "lower",
          description: "acknowledged writes not read back after the campaign",
        },
        {
          name: "replicaMismatchMiB",
          value: mismatchedMiB,
          unit: "MiB",
          better: "lower",
          description: "MiB that differed between replicas after a fault, summed",
        },
        { name: "rtoMsP50", value: percentile(sorted, 50), unit: "ms", better: "lower" },
        { name: "rtoMsP90", value: percentile(sorted, 90), unit: "ms", better: "lower" },
        { name: "rtoMsMax", value: sorted.at(-1) ?? Number.NaN, unit: "ms", better: "lower" },
        { name: "failovers", value: rtos.length, unit: "count", better: "none" },
        { name: "writesAcked", value: stats.acked, unit: "count", better: "higher" },
        {
          name: "writeErrors",
          value: stats.failed,
          unit: "count",
          better: "none",
          description: "writes refused or cut off by a fault (never counted as acknowledged)",
        },
        kept.figure,
      ],
      series: [ackSeries(load, marks)],
      violations: [...mismatches, ...v.examples.slice(0, 3)],
      notes: [
        `faults: ${Object.entries(counts)
          .map(([k, n]) => `${n} ${k}`)
          .join(", ")}; final node ${finalPath}`,
        `RTOs (ms): ${rtos.join(", ") || "none"}`,
      ],
    };
  } finally {
    await load.stop();
    for (const n of ctx.target.nodeIds()) await ctx.target.faults.restore(n).catch(() => undefined);
    for (const h of handles.reverse()) await h.detach().catch(() => undefined);
  }
}

export const faultCampaign: Check = {
  id: "ha.fault-campaign",
  family: "ha",
  title: "Fault campaign under load",
  measures:
    "acknowledged writes lost (must be 0), replica divergence and the RTO distribution over --faults N random faults in a row",
  needs: ["replication", "fault-kill-storage-process", "fault-kill-serving-node", "read-replicas"],
  minNodes: 3,
  // One fault of each kind at least: fewer may never move the volume, and an RTO bound would go unmeasured.
  skipReason: ({ faults }) =>
    faults < Object.keys(FAULT_NEEDS).length
      ? `--faults ${faults}: the campaign needs ${Object.keys(FAULT_NEEDS).length} or more`
      : null,
  run,
};
