// snapshot.delete-while-cloned: deleting a snapshot (and then its source
// volume) while a clone of it is being read. A target may refuse a delete
// while the snapshot is in use or has dependants; that is noted, not failed.
// Any other failure of the delete fails the check. If it accepts, the clone
// keeps reading exactly its bytes (the snapshot's A plus its own C) and no
// read fails, during the deletes and after a fresh attach.

import { ConformanceError, isConformanceError } from "../../errors.js";
import type { Check, CheckContext, CheckOutcome } from "../check.js";
import { sleep, throwIfCancelled } from "../common/cancel.js";
import { alongside } from "../common/concurrent.js";
import { figure } from "../common/figures.js";
import {
  attachVolume,
  BLOCK_BYTES,
  deleteSnapshotIfThere,
  type Expected,
  MAX_QUOTED_MISMATCHES,
  mismatchViolation,
  type Opened,
  Scope,
  takeSnapshot,
  VOLUME_BYTES,
  verifyBlocks,
  writeBlocks,
} from "./common.js";
import { decodeUnit, formatContent, formatStamp, type Stamp, sameStamp } from "./stamp.js";
import { mustFlush } from "./volume-io.js";

/** Blocks of the region (8 MiB): A over all of it, C over every eighth block. */
const REGION_BLOCKS = 2048;
/** Blocks one verifying read covers. */
const READ_BLOCKS = 16;
/** Verifying reads in flight. */
const READERS = 4;
/** Least time the clone is read after each delete. */
const MIN_READ_AFTER_MS = 500;
const STREAM_A = 0xa;
const STREAM_B = 0xb;
const STREAM_C = 0xc;

function pattern(stream: number, keep: (b: number) => boolean): Map<number, Stamp> {
  const out = new Map<number, Stamp>();
  for (let b = 0; b < REGION_BLOCKS; b++) if (keep(b)) out.set(b, { stream, unit: b, version: 0 });
  return out;
}

/** Reads of the clone, counted; what went wrong, quoted up to a bound. */
class Reader {
  reads = 0;
  /** Reads completed after the snapshot delete was accepted. */
  readsAfterDelete = 0;
  errors = 0;
  wrongReads = 0;
  readonly problems: string[] = [];
  /** Set once the target accepted the snapshot delete. */
  deleted = false;
  #stopped = false;
  readonly #clone: Opened;
  /** What every block of the clone holds: the snapshot's A under the clone's own C. */
  readonly #expected: Expected;
  readonly #random: () => number;

  constructor(clone: Opened, expected: Expected, random: () => number) {
    this.#clone = clone;
    this.#expected = expected;
    this.#random = random;
  }

  /** Reads random runs of blocks until {@link stop}, {@link READERS} at a time; settles once every reader has. */
  async run(): Promise<void> {
    const readers = await Promise.allSettled(Array.from({ length: READERS }, () => this.#loop()));
    for (const r of readers) if (r.status === "rejected") throw r.reason;
  }

  stop(): void {
    this.#stopped = true;
  }

  async #loop(): Promise<void> {
    while (!this.#stopped) {
      const first = Math.floor(this.#random() * (REGION_BLOCKS - READ_BLOCKS + 1));
      const phase = this.deleted ? "after the delete" : "before the delete";
      const r = await this.#clone.io.read(first * BLOCK_BYTES, READ_BLOCKS * BLOCK_BYTES);
      this.reads++;
      if (this.deleted) this.readsAfterDelete++;
      if (typeof r === "string") {
        this.errors++;
        this.#problem(`read ${phase} failed: ${r}`);
        continue;
      }
      const bad = this.#firstWrong(r, first);
      if (bad !== undefined) {
        this.wrongReads++;
        this.#problem(`read ${phase}: ${bad}`);
      }
    }
  }

  #firstWrong(data: Buffer, first: number): string | undefined {
    for (let i = 0; i < READ_BLOCKS; i++) {
      const found = decodeUnit(data, i * BLOCK_BYTES, BLOCK_BYTES);
      const want = this.#expected.get(first + i)!;
      if (found.kind !== "stamp" || !sameStamp(found.stamp, want)) {
        return `block ${first + i}: expected ${formatStamp(want)}, found ${formatContent(found)}`;
      }
    }
    return undefined;
  }

  #problem(text: string): void {
    if (this.problems.length < MAX_QUOTED_MISMATCHES) this.problems.push(text);
  }
}

/** Error codes (a target's own, carried as the ConformanceError's cause) that say "in use" or "has dependants". */
const REFUSAL_CODE = /IN_USE|DEPENDAN|DEPENDEN|HAS_CLONES|HAS_CHILDREN/i;
/** Words of a refusal for the same reasons, for targets that say it only in the message (CSI's FAILED_PRECONDITION). */
const REFUSAL_WORDS = /\bin use\b|\bIN_USE\b|\bdependan|\bdependen|\bhas (?:\d+ )?(?:clones?|children)\b/i;

/**
 * True when `error` is the target refusing a delete because the snapshot (or
 * volume) is in use or has dependants: the one failure this check tolerates.
 *
 * The code alone cannot tell: the local target maps every keelson failure
 * but not-found, admission and cancel to TARGET_FAILED (see
 * target/keelson-errors.ts), so a crashed daemon or a timeout reads the same
 * as a refusal. Keelson refuses a snapshot delete only with VOLUME_IN_USE
 * (engine store/pool.ts deleteSnapshot: the snapshot has open connections;
 * a clone does not hold it, its layers are kept), and that code is on the
 * keelson error the ConformanceError carries as its cause, and in its
 * message. So the cause's code, else the message, must say "in use" or
 * "dependants"; NOT_FOUND, CANCELLED and INTERNAL never count.
 */
export function isDependantRefusal(error: unknown): boolean {
  if (!isConformanceError(error)) return false;
  if (error.code === "NOT_FOUND" || error.code === "CANCELLED" || error.code === "INTERNAL") return false;
  const causeCode = (error.cause as { code?: unknown } | undefined)?.code;
  if (typeof causeCode === "string") return REFUSAL_CODE.test(causeCode);
  return REFUSAL_WORDS.test(error.message);
}

/** Tries a delete; resolves with true when accepted, false (noted) when refused as in use (see {@link isDependantRefusal}); throws any other failure. */
async function tryDelete(what: string, call: () => Promise<void>, notes: string[]): Promise<{ accepted: boolean; ms: number }> {
  const started = performance.now();
  try {
    await call();
    return { accepted: true, ms: performance.now() - started };
  } catch (error) {
    if (isDependantRefusal(error)) {
      notes.push(`the target refused to delete ${what} as in use while a clone of it was read (${(error as Error).message})`);
      return { accepted: false, ms: performance.now() - started };
    }
    if (isConformanceError(error) && error.code === "CANCELLED") throw error;
    throw new ConformanceError({
      code: "TARGET_FAILED",
      message: `deleting ${what} while a clone of it was read: expected it accepted, or refused as in use or depended on; it failed: ${(error as Error).message}`,
      cause: error,
    });
  }
}

/** Source with A then B, snapshot "base" between; clone of it with C. Leaves the source detached, the clone attached. */
async function prepare(ctx: CheckContext, scope: Scope, notes: string[]) {
  const a = pattern(STREAM_A, () => true);
  const c = pattern(STREAM_C, (b) => b % 8 === 0);
  const source = ctx.volumeName("source");
  const clone = ctx.volumeName("clone");
  const id = { volume: source, name: "base" };
  await ctx.target.provision({ name: source, sizeBytes: VOLUME_BYTES, replicas: 1 });
  {
    await using phase = new Scope(notes);
    const src = await attachVolume(ctx, phase, { volume: source });
    ctx.progress.step("writing A, snapshot, clone, then B to the source");
    await writeBlocks(src.io, 0, a);
    await mustFlush(src.io);
    await takeSnapshot(ctx, scope, id);
    await ctx.target.provision({ name: clone, sizeBytes: VOLUME_BYTES, replicas: 1, source: { snapshot: id } });
    await writeBlocks(
      src.io,
      0,
      pattern(STREAM_B, (b) => b % 2 === 0),
    );
    await mustFlush(src.io);
  }
  const cln = await attachVolume(ctx, scope, { volume: clone });
  await writeBlocks(cln.io, 0, c);
  await mustFlush(cln.io);
  return { id, source, clone, cln, expected: new Map([...a, ...c]) };
}

/** Deletes the snapshot, then the source volume, while `reader` reads the clone; the reader has stopped when this settles. */
async function deleteWhileReading(ctx: CheckContext, p: Awaited<ReturnType<typeof prepare>>, reader: Reader, notes: string[]) {
  const readAfterMs = Math.max(MIN_READ_AFTER_MS, ctx.timing.faultWindowS * 500);
  const deletes = async (readerFailed: AbortSignal) => {
    const wait = async () => {
      await sleep(readAfterMs, AbortSignal.any([ctx.signal, readerFailed]));
      throwIfCancelled(ctx.signal);
      readerFailed.throwIfAborted();
    };
    try {
      await wait();
      ctx.progress.step(`deleting snapshot ${p.id.volume}@${p.id.name} while its clone is read`);
      const snapshot = await tryDelete(`snapshot ${p.id.volume}@${p.id.name}`, () => ctx.target.deleteSnapshot(p.id), notes);
      reader.deleted = snapshot.accepted;
      await wait();
      ctx.progress.step(`deleting the source volume ${p.source} while the clone is read`);
      const volume = await tryDelete(`volume ${p.source}`, () => ctx.target.deleteVolume(p.source), notes);
      await wait();
      return { snapshot, volume };
    } finally {
      reader.stop();
    }
  };
  return (await alongside(() => [reader.run()], deletes)).value;
}

async function run(ctx: CheckContext): Promise<CheckOutcome> {
  const out = { violations: [] as string[], notes: [] as string[] };
  await using scope = new Scope(out.notes);
  const p = await prepare(ctx, scope, out.notes);
  const reader = new Reader(p.cln, p.expected, ctx.random);
  const deletes = await deleteWhileReading(ctx, p, reader, out.notes);
  if (reader.problems.length > 0) {
    out.violations.push(
      `${reader.wrongReads} of ${reader.reads} reads of the clone returned other bytes than A+C and ${reader.errors} failed ` +
        `while its snapshot and source were deleted: ${reader.problems.join("; ")}`,
    );
  }
  ctx.progress.step("reading the whole clone back, attached and after a fresh attach");
  const wrong = await verifyBlocks(p.cln.io, 0, REGION_BLOCKS, p.expected);
  await p.cln.detach();
  {
    await using phase = new Scope(out.notes);
    const again = await attachVolume(ctx, phase, { volume: p.clone });
    wrong.push(...(await verifyBlocks(again.io, 0, REGION_BLOCKS, p.expected)));
  }
  if (wrong.length > 0)
    out.violations.push(mismatchViolation("the clone after the deletes (expected A+C)", wrong, REGION_BLOCKS));
  if (!deletes.snapshot.accepted) {
    // The snapshot outlives the check otherwise: its dependant goes first.
    await ctx.target.deleteVolume(p.clone);
    await deleteSnapshotIfThere(ctx, p.id);
  }
  const accepted = (d: { accepted: boolean }) => (d.accepted ? 1 : 0);
  return {
    figures: [
      figure(
        "readsVerified",
        reader.reads - reader.errors,
        "count",
        "higher",
        `reads of ${READ_BLOCKS} blocks of the clone checked`,
      ),
      figure("readsAfterDelete", reader.readsAfterDelete, "count", "higher", "of them after the snapshot delete was accepted"),
      figure("readErrors", reader.errors, "count", "lower", "reads of the clone that failed"),
      figure("wrongReads", reader.wrongReads, "count", "lower", "reads of the clone that returned other bytes"),
      figure(
        "cloneWrongBlocks",
        wrong.length,
        "count",
        "lower",
        "blocks of the clone wrong at the end, attached and re-attached",
      ),
      figure("snapshotDeleteAccepted", accepted(deletes.snapshot), "count", "none", "1 when the snapshot delete was accepted"),
      figure("sourceDeleteAccepted", accepted(deletes.volume), "count", "none", "1 when the source volume delete was accepted"),
      figure("snapshotDeleteMs", deletes.snapshot.ms, "ms", "lower", "the snapshot delete call"),
    ],
    ...out,
  };
}

export const DELETE_WHILE_CLONED_CHECK: Check = {
  id: "snapshot.delete-while-cloned",
  family: "snapshot",
  title: "Deleting a snapshot and its source while a clone is read",
  measures: "a clone keeps reading its exact bytes, without errors, while its snapshot and source volume are deleted",
  needs: ["snapshots", "clones"],
  run,
};

export const DELETE_WHILE_CLONED_THRESHOLDS = {
  readErrors: { max: 0 },
  wrongReads: { max: 0 },
  cloneWrongBlocks: { max: 0 },
} as const;
