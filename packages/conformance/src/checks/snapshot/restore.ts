// snapshot.revert and snapshot.restore: going back to a snapshot, in place or
// as a new volume, gives exactly the snapshot's bytes: A written, snapshot, B
// written over half of A and past it; the reverted or restored volume reads A
// and zeros where only B was.

import type { Check, CheckContext, CheckOutcome } from "../check.js";
import { throwIfCancelled } from "../common/cancel.js";
import { figure } from "../common/figures.js";
import {
  attachSnapshot,
  attachVolume,
  type Expected,
  mismatchViolation,
  Scope,
  takeSnapshot,
  VOLUME_BYTES,
  verifyBlocks,
  writeBlocks,
} from "./common.js";
import type { Stamp } from "./stamp.js";
import { mustFlush } from "./volume-io.js";

/** Blocks of the region (4 MiB); A covers the first half, B every other block of A and the next quarter. */
const REGION_BLOCKS = 1024;
const STREAM_A = 0xa;
const STREAM_B = 0xb;

function pattern(stream: number, keep: (b: number) => boolean): Map<number, Stamp> {
  const out = new Map<number, Stamp>();
  for (let b = 0; b < REGION_BLOCKS; b++) if (keep(b)) out.set(b, { stream, unit: b, version: 0 });
  return out;
}

const A = pattern(STREAM_A, (b) => b < 512);
const B = pattern(STREAM_B, (b) => (b < 512 && b % 2 === 0) || (b >= 512 && b < 768));

/** Provisions `volume`, writes A, snapshots it as "a", writes B; leaves it detached. Resolves with the snapshot id. */
async function writeThenSnapshot(ctx: CheckContext, scope: Scope, volume: string, notes: string[]) {
  await ctx.target.provision({ name: volume, sizeBytes: VOLUME_BYTES, replicas: 1 });
  await using phase = new Scope(notes);
  const live = await attachVolume(ctx, phase, { volume });
  ctx.progress.step("writing A, snapshot, writing B over half of A and past it");
  await writeBlocks(live.io, 0, A);
  await mustFlush(live.io);
  const id = { volume, name: "a" };
  await takeSnapshot(ctx, scope, id);
  await writeBlocks(live.io, 0, B);
  await mustFlush(live.io);
  return id;
}

/** Attaches `volume` afresh and lists how it differs from `expected`. */
async function readBack(ctx: CheckContext, volume: string, expected: Expected, notes: string[]) {
  throwIfCancelled(ctx.signal);
  await using phase = new Scope(notes);
  const v = await attachVolume(ctx, phase, { volume });
  // Awaited here: the scope closes the connection as soon as the function returns.
  return await verifyBlocks(v.io, 0, REGION_BLOCKS, expected);
}

async function runRevert(ctx: CheckContext): Promise<CheckOutcome> {
  const out = { violations: [] as string[], notes: [] as string[] };
  await using scope = new Scope(out.notes);
  const volume = ctx.volumeName("revert");
  const id = await writeThenSnapshot(ctx, scope, volume, out.notes);
  ctx.progress.step(`reverting ${volume} to its snapshot`);
  const started = performance.now();
  await ctx.target.revert(id);
  const revertMs = performance.now() - started;
  const wrong = await readBack(ctx, volume, A, out.notes);
  if (wrong.length > 0) out.violations.push(mismatchViolation("the reverted volume (expected A only)", wrong, REGION_BLOCKS));
  await using phase = new Scope(out.notes);
  const snap = await attachSnapshot(ctx, phase, id);
  const snapWrong = await verifyBlocks(snap.io, 0, REGION_BLOCKS, A);
  if (snapWrong.length > 0) {
    out.violations.push(mismatchViolation("the snapshot after the revert (expected A only)", snapWrong, REGION_BLOCKS));
  }
  return {
    figures: [
      figure("wrongBlocks", wrong.length, "count", "lower", "blocks of the reverted volume not holding A (or zeros past it)"),
      figure("snapshotWrongBlocks", snapWrong.length, "count", "lower", "blocks of the snapshot changed by the revert"),
      figure("revertMs", revertMs, "ms", "lower", "the revert call"),
    ],
    ...out,
  };
}

async function runRestore(ctx: CheckContext): Promise<CheckOutcome> {
  const out = { violations: [] as string[], notes: [] as string[] };
  await using scope = new Scope(out.notes);
  const id = await writeThenSnapshot(ctx, scope, ctx.volumeName("source"), out.notes);
  const restored = ctx.volumeName("restored");
  ctx.progress.step(`restoring the snapshot as ${restored}`);
  const started = performance.now();
  await ctx.target.provision({ name: restored, sizeBytes: VOLUME_BYTES, replicas: 1, source: { snapshot: id } });
  const restoreMs = performance.now() - started;
  const wrong = await readBack(ctx, restored, A, out.notes);
  if (wrong.length > 0) out.violations.push(mismatchViolation("the restored volume (expected A only)", wrong, REGION_BLOCKS));
  return {
    figures: [
      figure("wrongBlocks", wrong.length, "count", "lower", "blocks of the restored volume not holding A (or zeros past it)"),
      figure("restoreMs", restoreMs, "ms", "lower", "provisioning the volume from the snapshot"),
    ],
    ...out,
  };
}

export const REVERT_CHECK: Check = {
  id: "snapshot.revert",
  family: "snapshot",
  title: "Reverting a volume in place gives back the snapshot's bytes",
  measures: "a detached volume reverted to a snapshot reads exactly the snapshot, and the snapshot is unchanged",
  needs: ["snapshots", "revert"],
  run: runRevert,
};

export const RESTORE_CHECK: Check = {
  id: "snapshot.restore",
  family: "snapshot",
  title: "A volume restored from a snapshot holds the snapshot's bytes",
  measures: "a new volume provisioned from a snapshot reads exactly the snapshot, not the source's later writes",
  needs: ["snapshots", "clones"],
  run: runRestore,
};

export const REVERT_THRESHOLDS = { wrongBlocks: { max: 0 }, snapshotWrongBlocks: { max: 0 } } as const;
export const RESTORE_THRESHOLDS = { wrongBlocks: { max: 0 } } as const;
