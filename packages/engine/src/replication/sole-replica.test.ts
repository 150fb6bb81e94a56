// A replica the record keeps as the only one in sync has no other to be
// rebuilt from: when it faults under a writer and answers again, the frontend
// takes it back as it is (the record never took it out, so no write it missed
// was acknowledged). A one-replica volume is always in that case.
import { KeelsonError } from "@keelson/sdk";
import { afterEach, describe, expect, it } from "vitest";
import type { ExportCallback, ExportCatalog, NbdExport } from "../nbd/export.js";
import { NbdServer } from "../nbd/server.js";
import type { FrontendHooks } from "./replicated-volume.js";
import { ReplicatedVolume } from "./replicated-volume.js";

const SIZE = 4 * 1024 * 1024;
const BLOCK = 4096;
/** Bound on waiting for the frontend's repair passes (1 s apart): a failure bound, not a timing claim. */
const REPAIR_WAIT_MS = 15_000;

/** A replica in memory whose disk can fail its I/O. */
class MemoryReplica implements NbdExport {
  readonly data = Buffer.alloc(SIZE);
  readonly description = "in memory";
  readonly sizeBytes = SIZE;
  readonly readOnly = false;
  /** While set, every write, flush and log save fails as a broken disk fails it. */
  broken = false;
  constructor(readonly name: string) {}
  #check(cb: ExportCallback): boolean {
    if (this.broken) cb(new KeelsonError({ code: "INTERNAL", message: "I/O error on the replica's disk" }));
    return !this.broken;
  }
  read(offset: number, length: number, buf: Buffer, at: number, cb: ExportCallback): void {
    this.data.copy(buf, at, offset, offset + length);
    cb(null);
  }
  write(offset: number, data: Buffer, _fua: boolean, cb: ExportCallback): void {
    if (!this.#check(cb)) return;
    data.copy(this.data, offset);
    cb(null);
  }
  zero(offset: number, length: number, _o: unknown, cb: ExportCallback): void {
    if (!this.#check(cb)) return;
    this.data.fill(0, offset, offset + length);
    cb(null);
  }
  flush(cb: ExportCallback): void {
    if (this.#check(cb)) cb(null);
  }
  saveActivity(_payload: Buffer, cb: ExportCallback): void {
    if (this.#check(cb)) cb(null);
  }
  close(): void {}
}

const cleanups: Array<() => unknown> = [];
afterEach(async () => {
  for (const c of cleanups.splice(0).reverse()) await c();
});

/** Serves `replica` over NBD as a replica node would; resolves with its address. */
async function serve(replica: MemoryReplica): Promise<string> {
  const catalog: ExportCatalog = {
    list: () => [],
    open: (name) => (name === replica.name ? replica : null),
    describe: (name) => (name === replica.name ? { sizeBytes: SIZE, readOnly: false, description: "" } : null),
  };
  const server = new NbdServer(catalog);
  await server.listen({ tcp: "127.0.0.1:0" });
  cleanups.push(() => server.close());
  return server.tcpAddress;
}

/**
 * The volume's record as etcd keeps it, behind the frontend's hooks: a fault
 * is recorded unless it would take the in-sync set under the quorum of 1
 * ("held"), as cluster/sync-marks.ts does.
 */
function recordHooks(addresses: Record<string, string>, inSync: Set<string>): Partial<FrontendHooks> {
  return {
    recordFault: async (nodeId) => {
      if (inSync.size - 1 < 1) return "held";
      inSync.delete(nodeId);
      return "recorded";
    },
    recordInSync: async (nodeId) => {
      inSync.add(nodeId);
    },
    prepareReplica: async (nodeId) => ({ nodeId, replicaAddress: addresses[nodeId] ?? "" }),
    replicaSet: async () => Object.keys(addresses),
  };
}

async function waitForState(rv: ReplicatedVolume, nodeId: string, state: string): Promise<void> {
  const deadline = Date.now() + REPAIR_WAIT_MS;
  while (rv.status().find((r) => r.nodeId === nodeId)?.state !== state) {
    if (Date.now() > deadline) throw new Error(`replica ${nodeId} did not become ${state}: ${JSON.stringify(rv.status())}`);
    await new Promise((r) => setTimeout(r, 100));
  }
}

function block(fill: number): Buffer {
  return Buffer.alloc(BLOCK, fill);
}

describe("the only replica in sync, faulted and back", () => {
  it("a one-replica volume whose replica failed a write serves again once it answers: no acknowledged write lost, later writes acknowledged", async () => {
    const a = new MemoryReplica("rv#1");
    const addresses = { a: await serve(a) };
    const inSync = new Set(["a"]);
    const rv = await ReplicatedVolume.open("rv", 1, [{ nodeId: "a", replicaAddress: addresses.a, inSync: true }], "frontend", {
      timeoutMs: 5_000,
      hooks: recordHooks(addresses, inSync),
    });
    cleanups.push(() => rv.close());
    await rv.write(0, block(1), false);
    await rv.flush();

    a.broken = true;
    expect(await rv.write(BLOCK, block(2), false).catch((e: unknown) => e)).toMatchObject({ code: "UNAVAILABLE" });
    expect(rv.status()[0]?.state).toBe("faulted");
    expect([...inSync], "the record keeps the only replica in sync").toEqual(["a"]);

    a.broken = false;
    await waitForState(rv, "a", "healthy");
    await rv.write(2 * BLOCK, block(3), false);
    await rv.flush();
    expect((await rv.read(0, BLOCK)).equals(block(1)), "the write acknowledged before the fault").toBe(true);
    expect((await rv.read(2 * BLOCK, BLOCK)).equals(block(3)), "the write acknowledged after").toBe(true);
    expect(a.data.subarray(2 * BLOCK, 3 * BLOCK).equals(block(3))).toBe(true);
    expect((await rv.detach(false)).clean).toBe(true);
  }, 30_000);

  it("both replicas faulted one after the other: the one the record kept in sync is taken back as it is, and the other is rebuilt from it (they end byte for byte equal)", async () => {
    const a = new MemoryReplica("rv#1");
    const b = new MemoryReplica("rv#1");
    const addresses = { a: await serve(a), b: await serve(b) };
    const inSync = new Set(["a", "b"]);
    const rv = await ReplicatedVolume.open(
      "rv",
      1,
      [
        { nodeId: "a", replicaAddress: addresses.a, inSync: true },
        { nodeId: "b", replicaAddress: addresses.b, inSync: true },
      ],
      "frontend",
      { timeoutMs: 5_000, hooks: recordHooks(addresses, inSync) },
    );
    cleanups.push(() => rv.close());
    await rv.write(0, block(1), false);

    // b fails first and stays broken (each repair pass reconnects it, and its rebuild fails): recorded
    // out of sync; a acknowledges the next write alone.
    b.broken = true;
    await rv.write(BLOCK, block(2), false);
    expect([...inSync]).toEqual(["a"]);

    // Then a fails: the record keeps it (the last one in sync), and nothing is acknowledged.
    a.broken = true;
    expect(await rv.write(2 * BLOCK, block(3), false).catch((e: unknown) => e)).toMatchObject({ code: "UNAVAILABLE" });
    expect(rv.status().map((r) => r.state)).toEqual(["faulted", "faulted"]);

    a.broken = false;
    await waitForState(rv, "a", "healthy");
    expect(rv.status().find((r) => r.nodeId === "b")?.state, "b is not taken back: it is out of sync").toBe("faulted");
    await rv.write(3 * BLOCK, block(4), false);

    b.broken = false;
    await waitForState(rv, "b", "healthy");
    expect([...inSync].sort()).toEqual(["a", "b"]);
    for (const [at, fill] of [
      [0, 1],
      [BLOCK, 2],
      [3 * BLOCK, 4],
    ] as const) {
      expect(a.data.subarray(at, at + BLOCK).equals(block(fill)), `a at ${at}`).toBe(true);
    }
    expect(a.data.equals(b.data), "b was rebuilt from a").toBe(true);
  }, 30_000);
});
