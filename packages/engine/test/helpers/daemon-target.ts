import path from "node:path";
import type { KeelsonClient } from "@keelson/sdk";
import { expect } from "vitest";
import type { LayerSpace, ModelTarget } from "../../src/testing/store-model.js";
import { startDaemon, type TestDaemon } from "./daemon.js";
import { NbdTestClient } from "./nbd-client.js";

/** Extent size of the model's pools, so the model's writes often straddle extents. */
export const MODEL_EXTENT_BYTES = 16 * 1024;
const EPERM = 1;

function check(r: { error: number }, what: string): void {
  if (r.error !== 0) throw new Error(`${what} failed with NBD error ${r.error}`);
}

/**
 * What a crash does besides killing the daemon: `crash` runs before the kill
 * -9 (a power cut of the pool's disk) and `recover` after it, resolving with
 * the pool path to restart on (the disk may come back as another device).
 */
export interface CrashHooks {
  crash(): Promise<void>;
  recover(): Promise<string>;
}

/** Options of {@link DaemonTarget.start}. */
export interface DaemonTargetOptions {
  /** The pool; a 96 MiB file in `dir` when omitted. */
  poolPath?: string;
  /** Run around every kill -9 restart. */
  crashHooks?: CrashHooks;
}

/** A real keelsond for the store model: control calls over gRPC, data over NBD, restarts by SIGTERM or SIGKILL. */
export class DaemonTarget implements ModelTarget {
  #daemon: TestDaemon;
  #client: KeelsonClient;
  readonly #connections = new Map<string, NbdTestClient>();
  #poolPath: string;
  readonly #dir: string;
  readonly #hooks: CrashHooks | undefined;
  restarts = 0;

  private constructor(daemon: TestDaemon, poolPath: string, dir: string, hooks: CrashHooks | undefined) {
    this.#daemon = daemon;
    this.#client = daemon.client();
    this.#poolPath = poolPath;
    this.#dir = dir;
    this.#hooks = hooks;
  }

  static async start(dir: string, options: DaemonTargetOptions = {}): Promise<DaemonTarget> {
    const poolPath = options.poolPath ?? path.join(dir, "pool.img");
    const daemon = await startDaemon({
      poolPath,
      ...(options.poolPath ? {} : { poolSize: "96M" }),
      dir,
      extraArgs: ["--extent-size", String(MODEL_EXTENT_BYTES)],
    });
    return new DaemonTarget(daemon, poolPath, dir, options.crashHooks);
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
  async layerSpace(): Promise<LayerSpace> {
    const views = new Map<string, number>();
    for (const v of await this.#client.listVolumes()) views.set(v.name, v.allocatedBytes);
    for (const s of await this.#client.listSnapshots()) views.set(`${s.volume}@${s.name}`, s.allocatedBytes);
    // The pool's allocated bytes include space that waits for a commit, so the total is not comparable here.
    return { views };
  }
  async restart(kill: boolean): Promise<void> {
    for (const c of this.#connections.values()) c.close();
    this.#connections.clear();
    if (kill) {
      await this.#hooks?.crash();
      await this.#daemon.kill9();
      if (this.#hooks) this.#poolPath = await this.#hooks.recover();
    } else await this.#daemon.stop();
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
