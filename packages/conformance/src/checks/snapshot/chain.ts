// snapshot.chain: 64 rounds of (write a distinct set of blocks, snapshot).
// Every snapshot i reads exactly the state after round i; then they are
// deleted in a random order (the run's seed), the remaining ones still read
// right half way through, and the live volume reads its last state at the end.

import type { SnapshotId } from "../../target/target.js";
import type { Check, CheckContext, CheckOutcome } from "../check.js";
import { throwIfCancelled } from "../common/cancel.js";
import { ascending, figure, percentile } from "../common/figures.js";
import {
  attachSnapshot,
  attachVolume,
  type Expected,
  mismatchViolation,
  Scope,
  shuffle,
  takeSnapshot,
  VOLUME_BYTES,
  verifyBlocks,
  WrongSnapshots,
  writeBlocks,
} from "./common.js";
import type { Stamp } from "./stamp.js";
import { mustFlush } from "./volume-io.js";

/** Snapshots in the chain. */
const ROUNDS = 64;
/** Blocks of the region (2 MiB: two 1 MiB extents on keelson, so every round touches layers anew). */
const REGION_BLOCKS = 512;
/** Blocks each round writes, picked at random. */
const BLOCKS_PER_ROUND = 16;
/** Snapshots read again half way through the deletes. */
const REREAD_AFTER_HALF = 8;
const STREAM = 0xc4a1;

/** The state of the region after each round: `states[0]` the fill, `states[i]` after round i. */
function plan(random: () => number): { writes: Map<number, Stamp>[]; states: Map<number, Stamp>[] } {
  const all = Array.from({ length: REGION_BLOCKS }, (_, b) => b);
  const fill = new Map<number, Stamp>(all.map((b) => [b, { stream: STREAM, unit: b, version: 0 }]));
  const writes = [fill];
  const states = [fill];
  for (let round = 1; round <= ROUNDS; round++) {
    const picked = shuffle(all, random).slice(0, BLOCKS_PER_ROUND);
    const w = new Map<number, Stamp>(picked.map((b) => [b, { stream: STREAM, unit: b, version: round }]));
    writes.push(w);
    states.push(new Map([...states[round - 1]!, ...w]));
  }
  return { writes, states };
}

/** Reads a snapshot back; resolves with its wrong blocks, quoted in `wrongSnapshots`. */
async function verifySnapshot(ctx: CheckContext, id: SnapshotId, expected: Expected, what: string, out: Outcome) {
  throwIfCancelled(ctx.signal);
  await using scope = new Scope(out.notes);
  const snap = await attachSnapshot(ctx, scope, id);
  const wrong = await verifyBlocks(snap.io, 0, REGION_BLOCKS, expected);
  if (wrong.length > 0) out.wrongSnapshots.add(id.name, wrong.length, mismatchViolation(what, wrong, REGION_BLOCKS));
  return wrong.length;
}

interface Outcome {
  violations: string[];
  notes: string[];
  /** Snapshots read back wrong, quoted into `violations` at the end. */
  wrongSnapshots: WrongSnapshots;
}

/** Writes the rounds and takes the snapshots; resolves with each create call's ms. */
async function build(ctx: CheckContext, scope: Scope, volume: string, writes: readonly Expected[], out: Outcome) {
  await using phase = new Scope(out.notes);
  const live = await attachVolume(ctx, phase, { volume });
  await writeBlocks(live.io, 0, writes[0]!);
  const createMs: number[] = [];
  for (let round = 1; round <= ROUNDS; round++) {
    throwIfCancelled(ctx.signal);
    if (round % 8 === 1) ctx.progress.step(`round ${round}/${ROUNDS}: write ${BLOCKS_PER_ROUND} blocks, snapshot`);
    await writeBlocks(live.io, 0, writes[round]!);
    await mustFlush(live.io);
    createMs.push(await takeSnapshot(ctx, scope, { volume, name: `round-${round}` }));
  }
  return createMs;
}

/** Deletes every snapshot in a random order; re-reads some survivors half way. */
async function deleteAll(ctx: CheckContext, volume: string, states: readonly Expected[], out: Outcome) {
  const order = shuffle(
    Array.from({ length: ROUNDS }, (_, i) => i + 1),
    ctx.random,
  );
  const deleteMs: number[] = [];
  let wrongAfterDeletes = 0;
  for (const [k, round] of order.entries()) {
    throwIfCancelled(ctx.signal);
    if (k % 16 === 0) ctx.progress.step(`deleting snapshots in random order (${k}/${ROUNDS})`);
    const started = performance.now();
    await ctx.target.deleteSnapshot({ volume, name: `round-${round}` });
    deleteMs.push(performance.now() - started);
    if (k !== ROUNDS / 2 - 1) continue;
    ctx.progress.step(`reading ${REREAD_AFTER_HALF} remaining snapshots after ${ROUNDS / 2} deletes`);
    for (const r of shuffle(order.slice(k + 1), ctx.random).slice(0, REREAD_AFTER_HALF)) {
      const what = `snapshot round-${r} after ${ROUNDS / 2} other snapshots were deleted`;
      wrongAfterDeletes += await verifySnapshot(ctx, { volume, name: `round-${r}` }, states[r]!, what, out);
    }
  }
  return { deleteMs, wrongAfterDeletes };
}

async function run(ctx: CheckContext): Promise<CheckOutcome> {
  const out: Outcome = { violations: [], notes: [], wrongSnapshots: new WrongSnapshots() };
  const { writes, states } = plan(ctx.random);
  const volume = ctx.volumeName("chain");
  await using scope = new Scope(out.notes);
  await ctx.target.provision({ name: volume, sizeBytes: VOLUME_BYTES, replicas: 1 });
  const createMs = await build(ctx, scope, volume, writes, out);
  let wrongBlocks = 0;
  let verified = 0;
  for (let round = 1; round <= ROUNDS; round++) {
    if (round % 16 === 1) ctx.progress.step(`reading snapshots back (${round - 1}/${ROUNDS})`);
    const wrong = await verifySnapshot(ctx, { volume, name: `round-${round}` }, states[round]!, `snapshot round-${round}`, out);
    wrongBlocks += wrong;
    if (wrong === 0) verified++;
  }
  const { deleteMs, wrongAfterDeletes } = await deleteAll(ctx, volume, states, out);
  out.violations.push(...out.wrongSnapshots.lines());
  await using phase = new Scope(out.notes);
  const live = await attachVolume(ctx, phase, { volume });
  const liveWrong = await verifyBlocks(live.io, 0, REGION_BLOCKS, states[ROUNDS]!);
  if (liveWrong.length > 0)
    out.violations.push(mismatchViolation("the live volume after every snapshot was deleted", liveWrong, REGION_BLOCKS));
  return {
    figures: [
      figure("snapshots", createMs.length, "count", "higher", "snapshots in the chain"),
      figure("snapshotCreateMsP50", percentile(ascending(createMs), 50), "ms", "lower", "snapshot create call, median"),
      figure("snapshotCreateMsP99", percentile(ascending(createMs), 99), "ms", "lower", "snapshot create call, 99th percentile"),
      figure("snapshotsVerified", verified, "count", "higher", "snapshots that read back exactly the state of their round"),
      figure("wrongBlocks", wrongBlocks, "count", "lower", "blocks of the snapshots not holding their round's state"),
      figure("snapshotDeleteMsP50", percentile(ascending(deleteMs), 50), "ms", "lower", "snapshot delete call, median"),
      figure(
        "wrongBlocksAfterDeletes",
        wrongAfterDeletes,
        "count",
        "lower",
        "blocks wrong in snapshots re-read half way through",
      ),
      figure("liveWrongBlocks", liveWrong.length, "count", "lower", "blocks of the live volume wrong after all deletes"),
    ],
    violations: out.violations,
    notes: out.notes,
  };
}

export const CHAIN_CHECK: Check = {
  id: "snapshot.chain",
  family: "snapshot",
  title: `A chain of ${ROUNDS} snapshots reads back round by round`,
  measures: `${ROUNDS} snapshots of a changing volume each hold their round's state; deleting them in random order changes no other`,
  needs: ["snapshots"],
  run,
};

export const CHAIN_THRESHOLDS = {
  snapshotsVerified: { min: ROUNDS },
  wrongBlocks: { max: 0 },
  wrongBlocksAfterDeletes: { max: 0 },
  liveWrongBlocks: { max: 0 },
} as const;
