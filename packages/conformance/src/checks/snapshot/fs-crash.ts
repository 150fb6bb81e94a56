// snapshot.fs-crash-consistency: a snapshot of a mounted ext4 taken without
// unmounting is what a power cut would leave. Cloned and attached as a block
// device, its journal is replayed (as a mount after a crash would), then
// `fsck.ext4 -fn` must find it clean, and every file fsynced (file and
// directory) before the snapshot must be there byte for byte. Files never
// fsynced may be there or not, and files keep changing while the snapshot is
// taken, so the snapshot cuts through work in progress.

import fs from "node:fs";
import path from "node:path";
import { ConformanceError } from "../../errors.js";
import { exec } from "../../host/exec.js";
import type { Check, CheckContext, CheckOutcome } from "../check.js";
import { sleep, throwIfCancelled } from "../common/cancel.js";
import { alongside } from "../common/concurrent.js";
import { figure } from "../common/figures.js";
import { MAX_QUOTED_MISMATCHES, Scope, takeSnapshot, VOLUME_BYTES } from "./common.js";
import { makeUnit, SECTOR_BYTES } from "./stamp.js";

/** Files written and fsynced (with their directory) before the snapshot. */
const SYNCED_FILES = 24;
/** Files written and never fsynced, rewritten while the snapshot is taken. */
const UNSYNCED_FILES = 16;
/** Largest file, bytes; sizes are random and mostly not sector multiples. */
const MAX_FILE_BYTES = 256 * 1024;
/** How long the churn runs before the snapshot call. */
const CHURN_BEFORE_MS = 300;
const FSCK_TIMEOUT_MS = 120_000;
const STREAM_SYNCED = 0xf5;
const STREAM_UNSYNCED = 0xf6;

/** Deterministic contents of file `index` of `stream`, `sizeBytes` long. */
function contents(stream: number, index: number, version: number, sizeBytes: number): Buffer {
  const unit = Math.ceil(Math.max(1, sizeBytes) / SECTOR_BYTES) * SECTOR_BYTES;
  return makeUnit({ stream, unit: index, version }, unit).subarray(0, sizeBytes);
}

async function fsyncPath(p: string): Promise<void> {
  const h = await fs.promises.open(p, "r");
  try {
    await h.sync();
  } finally {
    await h.close();
  }
}

/** Writes the fsynced files; resolves with name -> contents. */
async function writeSynced(dir: string, random: () => number): Promise<Map<string, Buffer>> {
  await fs.promises.mkdir(dir);
  const files = new Map<string, Buffer>();
  for (let i = 0; i < SYNCED_FILES; i++) {
    const name = `synced-${String(i).padStart(3, "0")}.bin`;
    const data = contents(STREAM_SYNCED, i, 0, 1 + Math.floor(random() * MAX_FILE_BYTES));
    const h = await fs.promises.open(path.join(dir, name), "w");
    try {
      await h.writeFile(data);
      await h.sync();
    } finally {
      await h.close();
    }
    files.set(name, data);
  }
  // A new file's name is durable once its directory is synced (POSIX); the parent holds the directory's own entry.
  await fsyncPath(dir);
  await fsyncPath(path.dirname(dir));
  return files;
}

/** A file written and fsynced (with its directory) while the snapshot was under way, and when that finished. */
interface LateFile {
  name: string;
  data: Buffer;
  syncedAtMs: number;
}

/** Writes one file of the churn and syncs it and its directory; its name and sync time go to `late`. */
async function writeLate(dir: string, index: number, random: () => number, late: LateFile[]): Promise<void> {
  const name = `late-${String(index).padStart(5, "0")}.bin`;
  const data = contents(STREAM_SYNCED, SYNCED_FILES + index, 0, 1 + Math.floor(random() * MAX_FILE_BYTES));
  const h = await fs.promises.open(path.join(dir, name), "w");
  try {
    await h.writeFile(data);
    await h.sync();
  } finally {
    await h.close();
  }
  await fsyncPath(dir);
  late.push({ name, data, syncedAtMs: performance.now() });
}

/**
 * Until `stop()`: rewrites, appends to and deletes files never fsynced, and
 * every fourth step writes and fsyncs a new file (so journal commits run
 * across the snapshot). Resolves with the steps taken.
 */
async function churn(root: string, random: () => number, stop: () => boolean, late: LateFile[]): Promise<number> {
  const dir = path.join(root, "unsynced");
  let ops = 0;
  for (let version = 0; !stop(); version++) {
    if (version % 4 === 3) {
      await writeLate(path.join(root, "late"), late.length, random, late);
    } else {
      const i = Math.floor(random() * UNSYNCED_FILES);
      const file = path.join(dir, `unsynced-${String(i).padStart(3, "0")}.bin`);
      if (random() < 0.1) await fs.promises.rm(file, { force: true });
      else await fs.promises.writeFile(file, contents(STREAM_UNSYNCED, i, version, 1 + Math.floor(random() * MAX_FILE_BYTES)));
      await fs.promises.appendFile(path.join(dir, "append.log"), `op ${version}\n`);
    }
    ops++;
  }
  return ops;
}

/**
 * Writes on the mounted volume and snapshots it mid-churn; resolves with the
 * synced files and the call's ms. The churn stops once the call returns;
 * when it fails meanwhile (the filesystem went read-only, the volume went
 * away), that is this call's error, never an unhandled rejection, and no
 * snapshot is taken after it. Exported for its unit test.
 */
export async function writeAndSnapshot(ctx: CheckContext, scope: Scope, volume: string, notes: string[]) {
  await using phase = new Scope(notes);
  ctx.progress.step(`attaching ${volume} as a mounted ext4`);
  const attached = await ctx.target.attach({ volume, mode: "filesystem", fsType: "ext4" });
  phase.defer(`detach ${volume}`, () => attached.detach());
  if (attached.dataPath.kind !== "filesystem") {
    throw new ConformanceError({
      code: "TARGET_FAILED",
      message: `attach mode "filesystem" gave a ${attached.dataPath.kind} path`,
    });
  }
  const root = attached.dataPath.mountPath;
  ctx.progress.step(`writing ${SYNCED_FILES} fsynced files`);
  const synced = await writeSynced(path.join(root, "synced"), ctx.random);
  await fs.promises.mkdir(path.join(root, "unsynced"));
  await fs.promises.mkdir(path.join(root, "late"));
  await fsyncPath(root);
  let stopped = false;
  const late: LateFile[] = [];
  const { value, loads } = await alongside(
    (stop) => [churn(root, ctx.random, () => stopped || stop.aborted, late)],
    async (churnFailed) => {
      try {
        await sleep(CHURN_BEFORE_MS, AbortSignal.any([ctx.signal, churnFailed]));
        throwIfCancelled(ctx.signal);
        churnFailed.throwIfAborted();
        ctx.progress.step("snapshot of the mounted filesystem while files change and fsync");
        const startMs = performance.now();
        return { startMs, callMs: await takeSnapshot(ctx, scope, { volume, name: "crash" }) };
      } finally {
        stopped = true;
      }
    },
  );
  const { startMs, callMs } = value;
  // A file whose fsync returned before the call started is as durable as the first ones.
  const lateSynced = new Map(late.filter((f) => f.syncedAtMs < startMs).map((f) => [f.name, f.data]));
  notes.push(
    `${loads[0]} file operations ran around the snapshot call; ${lateSynced.size} files were fsynced during them before it started.`,
  );
  return { synced, lateSynced, callMs };
}

/** True when the ext4 on `devicePath` has a journal to replay (the `needs_recovery` feature a crash leaves). */
async function needsRecovery(devicePath: string): Promise<boolean> {
  const r = await exec("dumpe2fs", ["-h", devicePath], { allowFail: true, timeoutMs: FSCK_TIMEOUT_MS });
  return /^Filesystem features:.*\bneeds_recovery\b/m.test(r.stdout);
}

/**
 * Replays the journal (what a mount after a crash does first), then runs
 * `fsck.ext4 -fn`; resolves with fsck's exit status (0 = clean) and whether
 * there was a journal to replay.
 */
async function fsck(devicePath: string, violations: string[]): Promise<{ status: number; replayed: boolean }> {
  const replayed = await needsRecovery(devicePath);
  const replay = await exec("e2fsck", ["-E", "journal_only", "-p", devicePath], { allowFail: true, timeoutMs: FSCK_TIMEOUT_MS });
  if (replay.code >= 4) {
    violations.push(
      `replaying the journal (e2fsck -E journal_only -p): expected exit 0 or 1, found exit ${replay.code}: ${tail(replay.stdout + replay.stderr)}`,
    );
  }
  const r = await exec("fsck.ext4", ["-fn", devicePath], { allowFail: true, timeoutMs: FSCK_TIMEOUT_MS });
  if (r.code !== 0) {
    violations.push(`fsck.ext4 -fn of the clone: expected exit 0 (clean), found exit ${r.code}: ${tail(r.stdout + r.stderr)}`);
  }
  return { status: r.code, replayed };
}

function tail(text: string): string {
  const t = text.trim().replace(/\s+/g, " ");
  return t.length > 600 ? `...${t.slice(-600)}` : t;
}

/** Mounts `devicePath` read-only under the check's work directory; unmounted when `scope` ends. */
async function mountReadOnly(ctx: CheckContext, scope: Scope, devicePath: string): Promise<string> {
  const dir = await fs.promises.mkdtemp(path.join(ctx.workDir, "clone-"));
  await exec("mount", ["-o", "ro", "-t", "ext4", devicePath, dir]);
  scope.defer(`umount ${dir}`, async () => {
    await exec("umount", [dir]);
    await fs.promises.rm(dir, { recursive: true, force: true });
  });
  return dir;
}

/** Compares each fsynced file with what was written; quotes the first few that differ. */
async function checkFiles(dir: string, synced: ReadonlyMap<string, Buffer>, violations: string[]) {
  let missing = 0;
  let wrong = 0;
  const quoted: string[] = [];
  for (const [name, want] of synced) {
    let found: Buffer;
    try {
      found = await fs.promises.readFile(path.join(dir, name));
    } catch (error) {
      missing++;
      quoted.push(`${name}: expected ${want.length} bytes, found it missing (${(error as NodeJS.ErrnoException).code})`);
      continue;
    }
    if (found.equals(want)) continue;
    wrong++;
    let at = 0;
    while (at < Math.min(found.length, want.length) && found[at] === want[at]) at++;
    quoted.push(`${name}: expected ${want.length} bytes as written, found ${found.length} bytes differing from byte ${at}`);
  }
  if (quoted.length > 0) {
    const more = quoted.length > MAX_QUOTED_MISMATCHES ? `; and ${quoted.length - MAX_QUOTED_MISMATCHES} more` : "";
    violations.push(
      `${missing + wrong} of ${synced.size} fsynced files are not in the crash-consistent clone as written: ` +
        `${quoted.slice(0, MAX_QUOTED_MISMATCHES).join("; ")}${more}`,
    );
  }
  return { missing, wrong };
}

async function countPresent(dir: string): Promise<number> {
  try {
    return (await fs.promises.readdir(dir)).filter((n) => n.startsWith("unsynced-")).length;
  } catch {
    return 0;
  }
}

async function run(ctx: CheckContext): Promise<CheckOutcome> {
  if (process.getuid?.() !== 0) {
    throw new ConformanceError({
      code: "NOT_SUPPORTED",
      message: "snapshot.fs-crash-consistency mounts the clone: it needs root",
    });
  }
  const out = { violations: [] as string[], notes: [] as string[] };
  await using scope = new Scope(out.notes);
  const volume = ctx.volumeName("fs");
  const clone = ctx.volumeName("fs-clone");
  await ctx.target.provision({ name: volume, sizeBytes: VOLUME_BYTES, replicas: 1 });
  const { synced, lateSynced, callMs } = await writeAndSnapshot(ctx, scope, volume, out.notes);
  ctx.progress.step("cloning the snapshot and attaching the clone as a block device");
  await ctx.target.provision({
    name: clone,
    sizeBytes: VOLUME_BYTES,
    replicas: 1,
    source: { snapshot: { volume, name: "crash" } },
  });
  const attached = await ctx.target.attach({ volume: clone, mode: "block" });
  scope.defer(`detach ${clone}`, () => attached.detach());
  if (attached.dataPath.kind !== "block") {
    throw new ConformanceError({ code: "TARGET_FAILED", message: `attach mode "block" gave a ${attached.dataPath.kind} path` });
  }
  ctx.progress.step("replaying the journal and running fsck.ext4 -fn on the clone");
  const checked = await fsck(attached.dataPath.devicePath, out.violations);
  throwIfCancelled(ctx.signal);
  ctx.progress.step("mounting the clone and comparing the fsynced files");
  const dir = await mountReadOnly(ctx, scope, attached.dataPath.devicePath);
  const first = await checkFiles(path.join(dir, "synced"), synced, out.violations);
  const late = await checkFiles(path.join(dir, "late"), lateSynced, out.violations);
  const missing = first.missing + late.missing;
  const wrong = first.wrong + late.wrong;
  return {
    figures: [
      figure(
        "fsckErrors",
        checked.status,
        "count",
        "lower",
        "fsck.ext4 -fn exit status after journal replay (0 = clean, 4 = errors left)",
      ),
      figure("filesMissing", missing, "count", "lower", "fsynced files absent from the clone"),
      figure("filesWrong", wrong, "count", "lower", "fsynced files in the clone with other bytes or size"),
      figure("filesSynced", synced.size + lateSynced.size, "count", "none", "files fsynced before the snapshot call started"),
      figure(
        "unsyncedFilesPresent",
        await countPresent(path.join(dir, "unsynced")),
        "count",
        "none",
        "unsynced files in the clone",
      ),
      figure(
        "journalReplayed",
        checked.replayed ? 1 : 0,
        "count",
        "none",
        "1 when the clone's journal needed replay (a crash state)",
      ),
      figure("snapshotCallMs", callMs, "ms", "lower", "the snapshot call on the mounted volume"),
    ],
    ...out,
  };
}

export const FS_CRASH_CHECK: Check = {
  id: "snapshot.fs-crash-consistency",
  family: "snapshot",
  title: "A snapshot of a mounted ext4 is crash-consistent",
  measures: "a clone of a snapshot taken without unmounting passes fsck and holds every fsynced file byte for byte",
  needs: ["snapshots", "clones", "filesystem", "block"],
  run,
};

export const FS_CRASH_THRESHOLDS = { fsckErrors: { max: 0 }, filesMissing: { max: 0 }, filesWrong: { max: 0 } } as const;
