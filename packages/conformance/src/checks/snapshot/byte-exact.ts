// snapshot.byte-exact (and its replicated twin): snapshots taken while
// writers keep many writes in flight hold, chunk by chunk, exactly what the
// snapshot contract allows (see write-ledger.ts for the rule).

import assert from "node:assert/strict";
import { ConformanceError } from "../../errors.js";
import type { DurationSetting } from "../../report/types.js";
import type { Capability, SnapshotId } from "../../target/target.js";
import type { Check, CheckContext, CheckOutcome, MeasuredFigure } from "../check.js";
import { sleep, throwIfCancelled } from "../common/cancel.js";
import { allSettledOrThrow, alongside } from "../common/concurrent.js";
import { ascending, figure, percentile } from "../common/figures.js";
import {
  attachSnapshot,
  attachVolume,
  MAX_QUOTED_MISMATCHES,
  MIB,
  type Opened,
  Scope,
  takeSnapshot,
  VOLUME_BYTES,
  WrongSnapshots,
} from "./common.js";
import { decodeUnit, makeUnit } from "./stamp.js";
import { mustFlush, mustRead, openVolumeIo, type VolumeIo } from "./volume-io.js";
import { judgeChunk, WriteLedger } from "./write-ledger.js";

/** Unit each lane writes: 32 sectors, so a torn write shows. */
const CHUNK_BYTES = 16 * 1024;
/** Chunks of the region under load (8 MiB at the start of the volume). */
const REGION_CHUNKS = 512;
/** Connections writing at once. */
const WRITERS = 4;
/** Sequential lanes per writer, each owning its own chunks: writes in flight per connection. */
const LANES_PER_WRITER = 4;
/** Snapshots taken under load, by duration setting. */
const SNAPSHOTS: Readonly<Record<DurationSetting, number>> = { short: 8, standard: 16, long: 32 };
/** Stamp stream of this check's writes. */
const STREAM = 0x5e1;
/** Writes the initial fill keeps in flight. */
const FILL_IN_FLIGHT = 32;

/** Which variant: one copy, or replicated across three nodes. */
interface Variant {
  id: string;
  title: string;
  replicas: number;
  needs: readonly Capability[];
  minNodes?: number;
}

/** A snapshot taken under load and when its call ran. */
export interface Taken {
  id: SnapshotId;
  startMs: number;
  endMs: number;
  callMs: number;
}

/** Writes every chunk once (version 0) so that any later content is a known write. */
async function fill(io: VolumeIo, ledger: WriteLedger): Promise<void> {
  for (let c = 0; c < REGION_CHUNKS; c += FILL_IN_FLIGHT) {
    const batch = Array.from({ length: Math.min(FILL_IN_FLIGHT, REGION_CHUNKS - c) }, (_, i) => c + i);
    await allSettledOrThrow(
      batch.map(async (chunk) => {
        const data = makeUnit({ stream: STREAM, unit: chunk, version: 0 }, CHUNK_BYTES);
        const record = ledger.begin(chunk);
        ledger.settle(record, await io.write(chunk * CHUNK_BYTES, data));
      }),
    );
  }
  if (ledger.failed > 0) {
    throw new ConformanceError({
      code: "TARGET_FAILED",
      message: `${io.where}: the initial fill failed: ${ledger.firstFailure}`,
    });
  }
  await mustFlush(io);
}

/** One lane: rewrites its own chunks, one write at a time, until `stop` says so or a write fails. */
async function lane(io: VolumeIo, ledger: WriteLedger, chunks: readonly number[], random: () => number, stop: () => boolean) {
  while (!stop()) {
    const chunk = chunks[Math.floor(random() * chunks.length)]!;
    const version = ledger.nextVersion(chunk);
    const data = makeUnit({ stream: STREAM, unit: chunk, version }, CHUNK_BYTES);
    const record = ledger.begin(chunk);
    assert.equal(record.version, version, `chunk ${chunk} written by two lanes`);
    const error = await io.write(chunk * CHUNK_BYTES, data);
    ledger.settle(record, error);
    if (error !== undefined) return;
  }
}

/** Opens one connection per writer; when the target allows only one, the writers share it (noted). */
async function openWriters(scope: Scope, live: Opened, notes: string[]): Promise<VolumeIo[]> {
  const ios = [live.io];
  for (let w = 1; w < WRITERS; w++) {
    try {
      const io = await openVolumeIo(live.dataPath, { readOnly: false });
      scope.defer("close writer connection", () => io.close());
      ios.push(io);
    } catch (error) {
      notes.push(
        `only ${ios.length} connection(s) to the volume could be opened (${(error as Error).message}); writers share them`,
      );
      break;
    }
  }
  return Array.from({ length: WRITERS }, (_, w) => ios[w % ios.length]!);
}

/**
 * Runs the writers while taking the snapshots; resolves once both are done.
 * A lane that fails (a broken promise of VolumeIo, an invariant) stops the
 * snapshots and is this call's error; every lane has stopped and settled
 * before it returns or throws. Exported for its unit test.
 */
export async function snapshotsUnderLoad(
  ctx: CheckContext,
  scope: Scope,
  volume: string,
  ios: VolumeIo[],
  ledger: WriteLedger,
): Promise<Taken[]> {
  const count = SNAPSHOTS[ctx.duration];
  const intervalMs = Math.max(100, (ctx.timing.phaseS * 1000) / count);
  const laneCount = WRITERS * LANES_PER_WRITER;
  let stopped = false;
  const startLanes = (stop: AbortSignal) =>
    Array.from({ length: laneCount }, (_, l) => {
      const chunks = Array.from({ length: REGION_CHUNKS }, (_, c) => c).filter((c) => c % laneCount === l);
      return lane(ios[l % WRITERS]!, ledger, chunks, ctx.random, () => stopped || stop.aborted || ctx.signal.aborted);
    });
  const takeAll = async (laneFailed: AbortSignal) => {
    const taken: Taken[] = [];
    try {
      for (let k = 0; k < count; k++) {
        await sleep(intervalMs, AbortSignal.any([ctx.signal, laneFailed]));
        throwIfCancelled(ctx.signal);
        laneFailed.throwIfAborted();
        ctx.progress.step(
          `snapshot ${k + 1}/${count} under ${laneCount} write lanes on ${WRITERS} connections (${ledger.acked} writes acked)`,
        );
        const id = { volume, name: `under-load-${k}` };
        const startMs = ledger.now();
        const callMs = await takeSnapshot(ctx, scope, id);
        taken.push({ id, startMs, endMs: ledger.now(), callMs });
      }
    } finally {
      stopped = true;
    }
    return taken;
  };
  return (await alongside(startLanes, takeAll)).value;
}

/** Judges every chunk of `data` against the window from `startMs` to `endMs`; returns the violations. */
function judgeRegion(ledger: WriteLedger, data: Buffer, startMs: number, endMs: number): { wrong: string[]; raced: number } {
  const wrong: string[] = [];
  let raced = 0;
  for (let c = 0; c < REGION_CHUNKS; c++) {
    const w = ledger.window(c, startMs, endMs);
    if (w.max > w.min) raced++;
    const why = judgeChunk(ledger, STREAM, c, decodeUnit(data, c * CHUNK_BYTES, CHUNK_BYTES), startMs, endMs);
    if (why !== undefined) wrong.push(why);
  }
  return { wrong, raced };
}

function quote(what: string, wrong: readonly string[]): string {
  const more = wrong.length > MAX_QUOTED_MISMATCHES ? `; and ${wrong.length - MAX_QUOTED_MISMATCHES} more` : "";
  return `${what}: ${wrong.length} of ${REGION_CHUNKS} chunks wrong: ${wrong.slice(0, MAX_QUOTED_MISMATCHES).join("; ")}${more}`;
}

/** Reads each snapshot back and judges it. */
async function verifySnapshots(ctx: CheckContext, ledger: WriteLedger, taken: readonly Taken[], out: Outcome) {
  let wrongChunks = 0;
  let racedChunks = 0;
  const wrongSnapshots = new WrongSnapshots();
  for (const [k, t] of taken.entries()) {
    throwIfCancelled(ctx.signal);
    ctx.progress.step(`reading snapshot ${k + 1}/${taken.length} back`);
    await using scope = new Scope(out.notes);
    const snap = await attachSnapshot(ctx, scope, t.id);
    const data = await mustRead(snap.io, 0, REGION_CHUNKS * CHUNK_BYTES);
    const { wrong, raced } = judgeRegion(ledger, data, t.startMs, t.endMs);
    racedChunks += raced;
    wrongChunks += wrong.length;
    if (wrong.length > 0) {
      wrongSnapshots.add(
        t.id.name,
        wrong.length,
        quote(`snapshot ${t.id.name} (its call took ${Math.round(t.callMs)} ms)`, wrong),
      );
    }
  }
  out.violations.push(...wrongSnapshots.lines());
  return { wrongChunks, racedChunks };
}

/** Violations and notes as a check collects them. */
interface Outcome {
  violations: string[];
  notes: string[];
}

/** Reads each replica of the (detached) volume on its own and judges it as the live volume; resolves with the wrong chunks. */
async function verifyReplicas(ctx: CheckContext, volume: string, ledger: WriteLedger, out: Outcome): Promise<number> {
  const atMs = ledger.now();
  let wrongChunks = 0;
  for (const replica of await ctx.target.replicaPaths(volume)) {
    ctx.progress.step(`reading the replica on ${replica.nodeId} on its own`);
    await using scope = new Scope(out.notes);
    const io = await openVolumeIo(replica.dataPath, { readOnly: true });
    scope.defer(`close replica on ${replica.nodeId}`, () => io.close());
    const { wrong } = judgeRegion(ledger, await mustRead(io, 0, REGION_CHUNKS * CHUNK_BYTES), atMs, atMs);
    wrongChunks += wrong.length;
    if (wrong.length > 0) out.violations.push(quote(`the replica on ${replica.nodeId}`, wrong));
  }
  out.notes.push(
    "each replica's copy of the volume was compared with the writes; snapshots were read through the target only, " +
      "as the target interface reads replicas of volumes, not of snapshots",
  );
  return wrongChunks;
}

/** Writes under load while snapshotting; checks the live volume once the writers stop. Resolves with the snapshots. */
async function loadPhase(ctx: CheckContext, snapshots: Scope, volume: string, ledger: WriteLedger, out: Outcome) {
  await using scope = new Scope(out.notes);
  const live = await attachVolume(ctx, scope, { volume });
  ctx.progress.step(`filling ${REGION_CHUNKS} chunks of ${CHUNK_BYTES / 1024} KiB`);
  await fill(live.io, ledger);
  const ios = await openWriters(scope, live, out.notes);
  const taken = await snapshotsUnderLoad(ctx, snapshots, volume, ios, ledger);
  if (ledger.failed > 0) {
    out.violations.push(`${ledger.failed} write(s) failed while snapshots were taken; the first: ${ledger.firstFailure}`);
  }
  await mustFlush(live.io);
  const atMs = ledger.now();
  const { wrong } = judgeRegion(ledger, await mustRead(live.io, 0, REGION_CHUNKS * CHUNK_BYTES), atMs, atMs);
  if (wrong.length > 0) out.violations.push(quote("the live volume once the writers stopped", wrong));
  return { taken, liveWrongChunks: wrong.length };
}

async function run(ctx: CheckContext, variant: Variant): Promise<CheckOutcome> {
  const out: Outcome = { violations: [], notes: [] };
  const ledger = new WriteLedger(REGION_CHUNKS);
  const volume = ctx.volumeName("load");
  await using scope = new Scope(out.notes);
  ctx.progress.step(`provisioning ${volume} (${VOLUME_BYTES / MIB} MiB, ${variant.replicas} replica(s))`);
  await ctx.target.provision({ name: volume, sizeBytes: VOLUME_BYTES, replicas: variant.replicas });
  const { taken, liveWrongChunks } = await loadPhase(ctx, scope, volume, ledger, out);
  const { wrongChunks, racedChunks } = await verifySnapshots(ctx, ledger, taken, out);
  const callMs = ascending(taken.map((t) => t.callMs));
  const figures: MeasuredFigure[] = [
    figure("snapshotsChecked", taken.length, "count", "higher", "snapshots taken under load and read back"),
    figure("chunksChecked", taken.length * REGION_CHUNKS, "count", "higher", `${CHUNK_BYTES / 1024} KiB chunks judged in them`),
    figure("wrongChunks", wrongChunks, "count", "lower", "chunks holding a lost, a too-new, a torn or a foreign write"),
    figure("racedChunks", racedChunks, "count", "none", "chunks with a write in flight across a snapshot call"),
    figure("writesAcked", ledger.acked, "count", "higher", "writes acknowledged during the run"),
    figure("writeErrors", ledger.failed, "count", "lower", "writes that failed while snapshots were taken"),
    figure("liveWrongChunks", liveWrongChunks, "count", "lower", "chunks of the live volume not holding their last write"),
    figure("snapshotCallMsP50", percentile(callMs, 50), "ms", "lower", "snapshot call latency under load, median"),
    figure("snapshotCallMsMax", percentile(callMs, 100), "ms", "lower", "snapshot call latency under load, worst"),
  ];
  if (variant.replicas > 1 && ctx.target.capabilities.has("read-replicas")) {
    const replicaWrongChunks = await verifyReplicas(ctx, volume, ledger, out);
    figures.push(
      figure("replicaWrongChunks", replicaWrongChunks, "count", "lower", "chunks wrong on some replica read on its own"),
    );
  } else if (variant.replicas > 1) {
    out.notes.push('the target does not declare "read-replicas": replicas were not compared on their own');
  }
  if (racedChunks === 0) out.notes.push("no write was in flight across any snapshot call: the run did not test the race");
  return { figures, ...out };
}

function byteExactCheck(variant: Variant): Check {
  return {
    id: variant.id,
    family: "snapshot",
    title: variant.title,
    measures: "snapshots under concurrent writes hold every write acknowledged before the call and none sent after it, untorn",
    needs: variant.needs,
    ...(variant.minNodes === undefined ? {} : { minNodes: variant.minNodes }),
    run: (ctx) => run(ctx, variant),
  };
}

export const BYTE_EXACT_CHECK = byteExactCheck({
  id: "snapshot.byte-exact",
  title: "Snapshots under concurrent writes are byte-exact",
  replicas: 1,
  needs: ["snapshots"],
});

export const BYTE_EXACT_REPLICATED_CHECK = byteExactCheck({
  id: "snapshot.byte-exact-replicated",
  title: "Snapshots of a 3-replica volume under concurrent writes are byte-exact",
  replicas: 3,
  needs: ["snapshots", "replication"],
  minNodes: 3,
});

/**
 * Figures judged by default: every invariant at zero. `replicaWrongChunks` is
 * measured only where the target reads replicas on its own, so it is not
 * bounded here (a bound on an unmeasured figure fails the check); a wrong
 * replica fails the check as a violation all the same.
 */
export const BYTE_EXACT_THRESHOLDS = {
  wrongChunks: { max: 0 },
  writeErrors: { max: 0 },
  liveWrongChunks: { max: 0 },
} as const;
