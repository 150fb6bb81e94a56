import fs from "node:fs";
import os from "node:os";
import path from "node:path";
import { isKeelsonError, type KeelsonError } from "@keelson/sdk";
import { afterEach, beforeEach, describe, expect, it } from "vitest";
import { NBD_ERRNO_BY_CODE } from "../nbd/errno.js";
import { Errno } from "../nbd/protocol.js";
import { TargetCatalog } from "../target/catalog.js";
import { testSeed } from "../testing/random.js";
import { type LayerSpace, type ModelTarget, runStoreModel } from "../testing/store-model.js";
import { BlockState, getState } from "./block-states.js";
import { Pool, poolCore } from "./pool.js";
import { acceptEveryReservation } from "./reservations.js";
import { flushVolume, readVolume, writeVolume, zeroVolume } from "./volume-io.js";

const EXTENT = 16 * 1024;
let dir: string;

beforeEach(() => {
  dir = fs.mkdtempSync(path.join(os.tmpdir(), "keelson-snapmodel-"));
});
afterEach(() => {
  fs.rmSync(dir, { recursive: true, force: true });
});

function io(run: (cb: (e: KeelsonError | null) => void) => void): Promise<void> {
  return new Promise((resolve, reject) => run((e) => (e ? reject(e) : resolve())));
}

/** The store in this process; "kill -9" abandons the pool without a commit and reopens the file. */
class InProcessTarget implements ModelTarget {
  pool: Pool;
  readonly file: string;

  constructor(pool: Pool, file: string) {
    this.pool = pool;
    this.file = file;
  }

  static async open(file: string): Promise<InProcessTarget> {
    return new InProcessTarget(
      await Pool.open({ admit: acceptEveryReservation, path: file, createSizeBytes: 96 * 1024 * 1024, extentSizeBytes: EXTENT }),
      file,
    );
  }

  async createVolume(name: string, sizeBytes: number): Promise<void> {
    await this.pool.createVolume({ name, sizeBytes });
  }
  async cloneSnapshot(name: string, volume: string, snapshot: string): Promise<void> {
    await this.pool.createVolume({ name, source: { snapshot: { volumeName: volume, name: snapshot } } });
  }
  async cloneVolume(name: string, source: string): Promise<void> {
    await this.pool.createVolume({ name, source: { volumeName: source } });
  }
  async deleteVolume(name: string): Promise<void> {
    await this.pool.deleteVolume(name);
  }
  async resizeVolume(name: string, sizeBytes: number): Promise<void> {
    await this.pool.resizeVolume(name, sizeBytes);
  }
  async createSnapshot(volume: string, name: string): Promise<void> {
    await this.pool.createSnapshot({ volumeName: volume, name });
  }
  async deleteSnapshot(volume: string, name: string): Promise<void> {
    await this.pool.deleteSnapshot(volume, name);
  }
  async revertVolume(volume: string, snapshot: string): Promise<void> {
    await this.pool.revertVolume(volume, snapshot);
  }
  write(volume: string, offset: number, data: Buffer): Promise<void> {
    return io((cb) => writeVolume(this.pool, this.pool.getVolume(volume), offset, data, false, cb));
  }
  zero(volume: string, offset: number, length: number, trim: boolean): Promise<void> {
    const options = { trim, noHole: false, fua: false };
    return io((cb) => zeroVolume(this.pool, this.pool.getVolume(volume), offset, length, options, cb));
  }
  flush(): Promise<void> {
    return io((cb) => flushVolume(this.pool, cb));
  }
  async writeReadOnly(exportName: string): Promise<string> {
    const exp = new TargetCatalog(this.pool).open(exportName);
    if (!exp) throw new Error(`no export ${exportName}`);
    try {
      const error = await io((cb) => exp.write(0, Buffer.alloc(4096, 1), false, cb)).then(
        () => null,
        (e: unknown) => e,
      );
      if (!exp.readOnly || !isKeelsonError(error)) return "none";
      const errno = NBD_ERRNO_BY_CODE[error.code];
      return Object.entries(Errno).find(([, n]) => n === errno)?.[0] ?? String(errno);
    } finally {
      exp.close();
    }
  }
  async readAll(exportName: string, sizeBytes: number): Promise<Buffer> {
    const view = this.pool.findVolume(exportName) ?? this.pool.findSnapshot(exportName);
    if (!view) throw new Error(`no export ${exportName}`);
    expect(view.sizeBytes).toBe(sizeBytes);
    const buf = Buffer.alloc(sizeBytes, 0xee);
    await io((cb) => readVolume(this.pool, view, 0, sizeBytes, buf, 0, cb));
    return buf;
  }
  async layerSpace(): Promise<LayerSpace> {
    const views = new Map<string, number>();
    for (const v of this.pool.listVolumes()) views.set(v.name, this.pool.layerBytes(v.head));
    for (const s of this.pool.listSnapshots()) views.set(s.name, this.pool.layerBytes(s.layer));
    return { views, allLayersBytes: this.pool.space().allocatedBytes - awaitingCommitBytes(this.pool) };
  }
  async restart(kill: boolean): Promise<void> {
    if (kill) this.pool.abandon();
    else await this.pool.close();
    this.pool = await Pool.open({ admit: acceptEveryReservation, path: this.file });
  }
}

/** Pool bytes freed but waiting for a durable commit before they can be reused. */
function awaitingCommitBytes(pool: Pool): number {
  const core = poolCore(pool);
  return core.allocator.awaitingCommitCount * EXTENT + core.blocks.awaitingCommitCount * 4096;
}

/**
 * The store's own books, checked after every step (the model checks what each layer holds from
 * outside): a layer's counters agree with its block states, and every allocated byte of the pool
 * is held by a layer or waits in quarantine for a commit (nothing leaks, nothing is counted twice).
 */
function checkBooks(pool: Pool, step: string): void {
  const core = poolCore(pool);
  let held = 0;
  for (const layer of core.layers.values()) {
    let dataBlocks = 0;
    for (const e of layer.extents.values())
      for (let b = 0; b < e.states.length * 4; b++) if (getState(e.states, b) === BlockState.DATA) dataBlocks++;
    const bytes = pool.layerBytes(layer);
    if (bytes !== dataBlocks * 4096)
      throw new Error(`${step}: layer ${layer.id} holds ${bytes} bytes for ${dataBlocks} data blocks`);
    held += bytes;
  }
  const awaiting = awaitingCommitBytes(pool);
  const allocated = pool.space().allocatedBytes;
  if (allocated !== held + awaiting) {
    throw new Error(`${step}: pool has ${allocated} bytes allocated; layers hold ${held}, ${awaiting} await a commit`);
  }
}

describe("snapshots, clones and reverts against a reference model", () => {
  it("random operations with crash restarts: every volume and snapshot equals the model after every step", async () => {
    const seed = testSeed();
    console.log(`snapshot model (in-process) seed=${seed} (rerun with KEELSON_SEED=${seed})`);
    const target = await InProcessTarget.open(path.join(dir, "pool.img"));
    try {
      const steps = Number(process.env.KEELSON_MODEL_STEPS ?? 1500);
      const report = await runStoreModel(target, {
        seed,
        steps,
        extentSizeBytes: EXTENT,
        trace: (line) => checkBooks(target.pool, line),
      });
      console.log(`snapshot model (in-process) report ${JSON.stringify(report)}`);
      expect(report.snapshot).toBeGreaterThan(0);
      expect(report.deleteSnapshot).toBeGreaterThan(0);
      expect(report.kill9).toBeGreaterThan(0);
      // Space: after deleting everything, the pool is back to empty.
      for (const s of target.pool.listSnapshots()) await target.pool.deleteSnapshot(s.record.volumeName, s.record.name);
      for (const v of target.pool.listVolumes()) await target.pool.deleteVolume(v.name);
      await target.pool.flush();
      await target.pool.flush();
      expect(target.pool.space().allocatedBytes).toBe(0);
      expect(target.pool.entryCount).toBe(0);
    } finally {
      await target.pool.close();
    }
  }, 120_000);
});
