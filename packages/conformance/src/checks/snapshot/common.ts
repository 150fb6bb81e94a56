// What the snapshot checks share: a cleanup scope, attaching with raw access,
// timed snapshots, and stamped regions written and verified. (Figures,
// percentiles, sleeping and cancelling are every family's: ../common/.)

import { isConformanceError } from "../../errors.js";
import type { AccessMode, AttachRequest, DataPath, SnapshotId } from "../../target/target.js";
import type { CheckContext } from "../check.js";
import { allSettledOrThrow } from "../common/concurrent.js";
import { decodeUnit, formatContent, formatStamp, makeUnit, type Stamp, sameStamp } from "./stamp.js";
import { mustRead, mustWrite, openVolumeIo, type VolumeIo } from "./volume-io.js";

export const MIB = 1024 * 1024;
/** Every volume the family makes: small, so short runs stay short. */
export const VOLUME_BYTES = 64 * MIB;
/** Unit of the stamped regions (one filesystem block). */
export const BLOCK_BYTES = 4096;
/** Writes a region fill keeps in flight. */
const WRITES_IN_FLIGHT = 16;
/** Mismatches quoted in full in one violation; the rest are counted. */
export const MAX_QUOTED_MISMATCHES = 4;
/** Snapshots whose mismatches are quoted in full; further wrong ones are only named. */
const MAX_QUOTED_SNAPSHOTS = 3;

/** Undo steps run newest first when the scope ends (`await using`); failures become notes, never hide the check's result. */
export class Scope implements AsyncDisposable {
  readonly #steps: { what: string; undo: () => Promise<void> }[] = [];
  /** Where cleanup failures are reported: the check's notes. */
  readonly #notes: string[];

  constructor(notes: string[]) {
    this.#notes = notes;
  }

  defer(what: string, undo: () => Promise<void>): void {
    this.#steps.push({ what, undo });
  }

  async [Symbol.asyncDispose](): Promise<void> {
    for (let step = this.#steps.pop(); step !== undefined; step = this.#steps.pop()) {
      try {
        await step.undo();
      } catch (error) {
        this.#notes.push(`cleanup: ${step.what} failed: ${(error as Error).message}`);
      }
    }
  }
}

/** An attachment with raw access; both undone when `scope` ends. */
export interface Opened {
  io: VolumeIo;
  /** What the attach handed back, for opening more connections to it. */
  dataPath: DataPath;
  /** Detaches now (idempotent); the scope's step then does nothing. */
  detach(): Promise<void>;
}

async function openAttached(
  scope: Scope,
  what: string,
  attached: { dataPath: DataPath; detach(): Promise<void> },
  readOnly: boolean,
): Promise<Opened> {
  let io: VolumeIo | undefined;
  let done = false;
  const detach = async () => {
    if (done) return;
    done = true;
    await io?.close();
    await attached.detach();
  };
  scope.defer(`detach ${what}`, detach);
  io = await openVolumeIo(attached.dataPath, { readOnly });
  return { io, dataPath: attached.dataPath, detach };
}

/** Attaches a volume (nbd where the target has it, else block) and opens it for raw I/O. */
export async function attachVolume(ctx: CheckContext, scope: Scope, request: AttachRequest): Promise<Opened> {
  const attached = await ctx.target.attach(request);
  return openAttached(scope, `volume ${request.volume}`, attached, request.readOnly === true);
}

/** Attaches a snapshot read-only and opens it for raw reads. */
export async function attachSnapshot(ctx: CheckContext, scope: Scope, id: SnapshotId, mode?: AccessMode): Promise<Opened> {
  const attached = await ctx.target.attachSnapshot(id, mode);
  return openAttached(scope, `snapshot ${id.volume}@${id.name}`, attached, true);
}

/** Takes a snapshot, deleted when `scope` ends (unless gone already); resolves with the call's duration in ms. */
export async function takeSnapshot(ctx: CheckContext, scope: Scope, id: SnapshotId): Promise<number> {
  const started = performance.now();
  await ctx.target.snapshot(id);
  const ms = performance.now() - started;
  scope.defer(`delete snapshot ${id.volume}@${id.name}`, () => deleteSnapshotIfThere(ctx, id));
  return ms;
}

/** Deletes a snapshot; NOT_FOUND (deleted already) is fine. */
export async function deleteSnapshotIfThere(ctx: CheckContext, id: SnapshotId): Promise<void> {
  try {
    await ctx.target.deleteSnapshot(id);
  } catch (error) {
    if (!(isConformanceError(error) && error.code === "NOT_FOUND")) throw error;
  }
}

/** What each block of a region should hold: a stamp, or zeros (never written). */
export type Expected = ReadonlyMap<number, Stamp>;

/** Writes `stamps` (block index -> stamp) into the region at `regionOffset`, {@link WRITES_IN_FLIGHT} at a time. */
export async function writeBlocks(io: VolumeIo, regionOffset: number, stamps: Expected): Promise<void> {
  const entries = [...stamps];
  for (let i = 0; i < entries.length; i += WRITES_IN_FLIGHT) {
    await allSettledOrThrow(
      entries
        .slice(i, i + WRITES_IN_FLIGHT)
        .map(([block, stamp]) => mustWrite(io, regionOffset + block * BLOCK_BYTES, makeUnit(stamp, BLOCK_BYTES))),
    );
  }
}

/** One block that does not hold what it should. */
export interface Mismatch {
  block: number;
  expected: string;
  found: string;
}

/** Reads `blocks` blocks at `regionOffset` and lists those that differ from `expected` (absent = zeros). */
export async function verifyBlocks(io: VolumeIo, regionOffset: number, blocks: number, expected: Expected): Promise<Mismatch[]> {
  const data = await mustRead(io, regionOffset, blocks * BLOCK_BYTES);
  const out: Mismatch[] = [];
  for (let b = 0; b < blocks; b++) {
    const found = decodeUnit(data, b * BLOCK_BYTES, BLOCK_BYTES);
    const want = expected.get(b);
    const ok = want === undefined ? found.kind === "zeros" : found.kind === "stamp" && sameStamp(found.stamp, want);
    if (!ok) out.push({ block: b, expected: want === undefined ? "zeros" : formatStamp(want), found: formatContent(found) });
  }
  return out;
}

/** One violation line for `mismatches` of `what` ("clone c1"), quoting the first few. */
export function mismatchViolation(what: string, mismatches: readonly Mismatch[], blocks: number): string {
  const quoted = mismatches
    .slice(0, MAX_QUOTED_MISMATCHES)
    .map((m) => `block ${m.block}: expected ${m.expected}, found ${m.found}`)
    .join("; ");
  const more = mismatches.length > MAX_QUOTED_MISMATCHES ? `; and ${mismatches.length - MAX_QUOTED_MISMATCHES} more` : "";
  return `${what}: ${mismatches.length} of ${blocks} blocks (${BLOCK_BYTES} B) differ from what was written: ${quoted}${more}`;
}

/** A seeded shuffle (Fisher-Yates) with the run's randomness. */
export function shuffle<T>(items: readonly T[], random: () => number): T[] {
  const out = [...items];
  for (let i = out.length - 1; i > 0; i--) {
    const j = Math.floor(random() * (i + 1));
    [out[i], out[j]] = [out[j]!, out[i]!];
  }
  return out;
}

/** Violations of many snapshots: the first few quoted in full, the others named with their count, so a message stays readable. */
export class WrongSnapshots {
  readonly #quoted: string[] = [];
  readonly #named: string[] = [];

  /** `line` quotes what `name` got wrong; `wrong` counts it. */
  add(name: string, wrong: number, line: string): void {
    if (this.#quoted.length < MAX_QUOTED_SNAPSHOTS) this.#quoted.push(line);
    else this.#named.push(`${name} (${wrong})`);
  }

  /** The violation lines. */
  lines(): string[] {
    if (this.#named.length === 0) return [...this.#quoted];
    return [...this.#quoted, `${this.#named.length} more snapshots wrong (wrong units in brackets): ${this.#named.join(", ")}`];
  }
}
