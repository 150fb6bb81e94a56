import path from "node:path";
import type { KeelsonClient } from "@keelson/sdk";
import { describe, expect, it } from "vitest";
import { testSeed } from "../src/testing/random.js";
import { type ModelTarget, runStoreModel } from "../src/testing/store-model.js";
import { startDaemon, type TestDaemon, tempDir } from "./helpers/daemon.js";
import { NbdTestClient } from "./helpers/nbd-client.js";

const EXTENT = 16 * 1024;
const EPERM = 1;

function check(r: { error: number }, what: string): void {
  if (r.error !== 0) throw new Error(`${what} failed with NBD error ${r.error}`);
}

/** A real keelsond: control calls over gRPC, data over NBD, restarts by SIGTERM or SIGKILL. */
class DaemonTarget implements ModelTarget {
  #daemon: TestDaemon;
  #client: KeelsonClient;
  readonly #connections = new Map<string, NbdTestClient>();
  readonly #poolPath: string;
  readonly #dir: string;
  restarts = 0;

  private constructor(daemon: TestDaemon, poolPath: string, dir: string) {
    this.#daemon = daemon;
    this.#client = daemon.client();
    this.#poolPath = poolPath;
    this.#dir = dir;
  }

  static async start(dir: string): Promise<DaemonTarget> {
    const poolPath = path.join(dir, "pool.img");
    const daemon = await startDaemon({ poolPath, poolSize: "96M", dir, extraArgs: ["--extent-size", String(EXTENT)] });
    return new DaemonTarget(daemon, poolPath, dir);
  }

  async #connection(exportName: string): Promise<NbdTestClient> {
    let c = this.#connections.get(exportName);
    if (!c) {
      c = await NbdTestClient.open(this.#daemon.nbdAddress, exportName);
      this.#connections.set(exportName, c);
    }
    return c;
  }

  async #disconnect(exportName: string): Promise<void> {
    const c = this.#connections.get(exportName);
    if (!c) return;
    this.#connections.delete(exportName);
    await c.disconnect();
  }

  async createVolume(name: string, sizeBytes: number): Promise<void> {
    await this.#client.createVolume({ name, sizeBytes });
  }
  async cloneSnapshot(name: string, volume: string, snapshot: string): Promise<void> {
    await this.#client.createVolume({ name, sizeBytes: 0, source: { snapshot: { volume, name: snapshot } } });
  }
  async cloneVolume(name: string, source: string): Promise<void> {
    await this.#client.createVolume({ name, sizeBytes: 0, source: { volume: source } });
  }
  async deleteVolume(name: string): Promise<void> {
    await this.#disconnect(name);
    await this.#client.deleteVolume({ name });
  }
  async resizeVolume(name: string, sizeBytes: number): Promise<void> {
    await this.#client.resizeVolume({ name, sizeBytes });
    // Clients see a new size when they reconnect; readAll checks the size the new connection is given.
    await this.#disconnect(name);
  }
  async createSnapshot(volume: string, name: string): Promise<void> {
    await this.#client.createSnapshot({ volume, name });
  }
  async deleteSnapshot(volume: string, name: string): Promise<void> {
    await this.#disconnect(`${volume}@${name}`);
    await this.#client.deleteSnapshot({ volume, name });
  }
  async revertVolume(volume: string, snapshot: string): Promise<void> {
    await this.#disconnect(volume);
    await this.#client.revertVolume({ name: volume, snapshot });
  }
  async write(volume: string, offset: number, data: Buffer): Promise<void> {
    check(await (await this.#connection(volume)).write(offset, data), `write ${volume}`);
  }
  async zero(volume: string, offset: number, length: number, trim: boolean): Promise<void> {
    const c = await this.#connection(volume);
    check(await (trim ? c.trim(offset, length) : c.writeZeroes(offset, length)), `zero ${volume}`);
  }
  async flush(volume: string): Promise<void> {
    check(await (await this.#connection(volume)).flush(), `flush ${volume}`);
  }
  async writeReadOnly(exportName: string): Promise<string> {
    const r = await (await this.#connection(exportName)).write(0, Buffer.alloc(4096, 1));
    return r.error === EPERM ? "EPERM" : `errno ${r.error}`;
  }
  async readAll(exportName: string, sizeBytes: number): Promise<Buffer> {
    const c = await this.#connection(exportName);
    expect(c.sizeBytes, `size of export ${exportName}`).toBe(sizeBytes);
    const r = await c.read(0, sizeBytes);
    check(r, `read ${exportName}`);
    return r.data;
  }
  async restart(kill: boolean): Promise<void> {
    for (const c of this.#connections.values()) c.close();
    this.#connections.clear();
    if (kill) await this.#daemon.kill9();
    else await this.#daemon.stop();
    this.#daemon = await startDaemon({ poolPath: this.#poolPath, dir: this.#dir });
    this.#client = this.#daemon.client();
    this.restarts++;
  }
  async close(): Promise<void> {
    for (const c of this.#connections.values()) c.close();
    await this.#daemon.stop();
  }
  get client(): KeelsonClient {
    return this.#client;
  }
}

describe("snapshot model against the real daemon", () => {
  it("random snapshots, clones, reverts, deletes, expansions, I/O and kill -9 restarts: volumes and snapshots equal the model after every step", async () => {
    const seed = testSeed();
    const steps = Number(process.env.KEELSON_MODEL_STEPS ?? 2000);
    console.log(
      `snapshot model (daemon) seed=${seed} steps=${steps} (rerun: KEELSON_SEED=${seed} npx vitest run test/snapshot-model)`,
    );
    using dir = tempDir("keelson-model-");
    const target = await DaemonTarget.start(dir.path);
    try {
      const report = await runStoreModel(target, { seed, steps, extentSizeBytes: EXTENT });
      console.log(`snapshot model (daemon) report ${JSON.stringify(report)}`);
      expect(report.kill9).toBeGreaterThan(0);
      expect(report.deleteSnapshot).toBeGreaterThan(0);
      // Space comes back: with every snapshot and volume deleted the pool is empty again.
      for (const s of await target.client.listSnapshots()) {
        await target.client.deleteSnapshot({ volume: s.volume, name: s.name }).catch(async () => {
          await target.restart(false);
          await target.client.deleteSnapshot({ volume: s.volume, name: s.name });
        });
      }
      await target.restart(false);
      for (const v of await target.client.listVolumes()) await target.client.deleteVolume({ name: v.name });
      await target.restart(false);
      const { pool } = await target.client.getNode();
      expect(pool.allocatedBytes).toBe(0);
      expect(pool.freeBytes).toBe(pool.totalBytes);
      expect(pool.snapshotCount).toBe(0);
    } finally {
      await target.close();
    }
  }, 600_000);
});
