// snapshot.clone-independence: a clone and its source share the snapshot's
// data and nothing after it. A written to the source, snapshot, clone; then B
// to the source and C to the clone at once, partly at the same offsets: the
// source reads A+B, the clone A+C, the snapshot A, while attached and again
// after a fresh attach.

import type { Check, CheckContext, CheckOutcome } from "../check.js";
import { throwIfCancelled } from "../common/cancel.js";
import { allSettledOrThrow } from "../common/concurrent.js";
import { figure } from "../common/figures.js";
import {
  attachSnapshot,
  attachVolume,
  type Expected,
  MIB,
  mismatchViolation,
  Scope,
  takeSnapshot,
  VOLUME_BYTES,
  verifyBlocks,
  writeBlocks,
} from "./common.js";
import type { Stamp } from "./stamp.js";
import { mustFlush, type VolumeIo } from "./volume-io.js";

/** Blocks of the region (4 MiB). */
const REGION_BLOCKS = 1024;
/** Blocks A covers; the rest of the region starts as zeros. */
const A_BLOCKS = 768;
const STREAM_A = 0xa;
const STREAM_B = 0xb;
const STREAM_C = 0xc;

function stamps(stream: number, blocks: Iterable<number>): Map<number, Stamp> {
  const out = new Map<number, Stamp>();
  for (const b of blocks) out.set(b, { stream, unit: b, version: 0 });
  return out;
}

function range(from: number, to: number, keep: (b: number) => boolean = () => true): number[] {
  return Array.from({ length: to - from }, (_, i) => from + i).filter(keep);
}

/** A, B and C: B and C overlap at every fourth block of A and in part of the fresh range. */
export function clonePatterns() {
  const a = stamps(STREAM_A, range(0, A_BLOCKS));
  const b = stamps(STREAM_B, [...range(0, A_BLOCKS, (x) => x % 4 === 0), ...range(768, 896)]);
  const c = stamps(STREAM_C, [...range(0, A_BLOCKS, (x) => x % 4 <= 1), ...range(832, 960)]);
  return { a, source: new Map([...a, ...b]), clone: new Map([...a, ...c]), b, c };
}

/** Reads the region through `io` and records what differs from `expected`; resolves with the wrong blocks. */
async function check(
  ctx: CheckContext,
  what: string,
  io: VolumeIo,
  expected: Expected,
  out: { violations: string[] },
): Promise<number> {
  throwIfCancelled(ctx.signal);
  ctx.progress.step(`reading ${what} back`);
  const wrong = await verifyBlocks(io, 0, REGION_BLOCKS, expected);
  if (wrong.length > 0) out.violations.push(mismatchViolation(what, wrong, REGION_BLOCKS));
  return wrong.length;
}

async function run(ctx: CheckContext): Promise<CheckOutcome> {
  const out = { violations: [] as string[], notes: [] as string[] };
  const p = clonePatterns();
  const source = ctx.volumeName("source");
  const clone = ctx.volumeName("clone");
  const base = { volume: source, name: "base" };
  await using scope = new Scope(out.notes);
  await ctx.target.provision({ name: source, sizeBytes: VOLUME_BYTES, replicas: 1 });
  let sourceWrong = 0;
  let cloneWrong = 0;
  {
    await using phase = new Scope(out.notes);
    const src = await attachVolume(ctx, phase, { volume: source });
    ctx.progress.step(`writing A (${A_BLOCKS} blocks), snapshot, clone`);
    await writeBlocks(src.io, 0, p.a);
    await mustFlush(src.io);
    await takeSnapshot(ctx, scope, base);
    await ctx.target.provision({ name: clone, sizeBytes: VOLUME_BYTES, replicas: 1, source: { snapshot: base } });
    const cln = await attachVolume(ctx, phase, { volume: clone });
    ctx.progress.step("writing B to the source and C to the clone at once");
    await allSettledOrThrow([writeBlocks(src.io, 0, p.b), writeBlocks(cln.io, 0, p.c)]);
    await allSettledOrThrow([mustFlush(src.io), mustFlush(cln.io)]);
    sourceWrong += await check(ctx, "the source while attached (expected A+B)", src.io, p.source, out);
    cloneWrong += await check(ctx, "the clone while attached (expected A+C)", cln.io, p.clone, out);
  }
  {
    await using phase = new Scope(out.notes);
    const src = await attachVolume(ctx, phase, { volume: source });
    sourceWrong += await check(ctx, "the source after a fresh attach (expected A+B)", src.io, p.source, out);
    const cln = await attachVolume(ctx, phase, { volume: clone });
    cloneWrong += await check(ctx, "the clone after a fresh attach (expected A+C)", cln.io, p.clone, out);
    const snap = await attachSnapshot(ctx, phase, base);
    const snapshotWrong = await check(ctx, "the snapshot (expected A only)", snap.io, p.a, out);
    return {
      figures: [
        figure("sourceWrongBlocks", sourceWrong, "count", "lower", "source blocks not A+B, summed over both reads"),
        figure("cloneWrongBlocks", cloneWrong, "count", "lower", "clone blocks not A+C, summed over both reads"),
        figure("snapshotWrongBlocks", snapshotWrong, "count", "lower", "snapshot blocks not A after both sides wrote"),
        figure("blocksChecked", 5 * REGION_BLOCKS, "count", "higher", `${REGION_BLOCKS} blocks of 4 KiB in each of 5 reads`),
      ],
      ...out,
    };
  }
}

export const CLONE_INDEPENDENCE_CHECK: Check = {
  id: "snapshot.clone-independence",
  family: "snapshot",
  title: "A clone and its source do not see each other's writes",
  measures: `writes after a clone stay on their side: source reads A+B, clone A+C, snapshot A (${(REGION_BLOCKS * 4096) / MIB} MiB each)`,
  needs: ["snapshots", "clones"],
  run,
};

export const CLONE_INDEPENDENCE_THRESHOLDS = {
  sourceWrongBlocks: { max: 0 },
  cloneWrongBlocks: { max: 0 },
  snapshotWrongBlocks: { max: 0 },
} as const;
