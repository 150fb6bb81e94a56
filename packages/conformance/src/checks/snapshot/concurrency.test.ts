// The snapshot checks keep load running while they call the target: a load
// that fails meanwhile must surface as the check's error, never as an
// unhandled rejection (which crashes the CLI before its cleanup), and every
// load is stopped and settled before the call returns or throws.

import fs from "node:fs";
import os from "node:os";
import path from "node:path";
import { afterEach, beforeEach, describe, expect, it } from "vitest";
import { fakeContext } from "../common/fake-context.js";
import { snapshotsUnderLoad } from "./byte-exact.js";
import { Scope } from "./common.js";
import { writeAndSnapshot } from "./fs-crash.js";
import type { VolumeIo } from "./volume-io.js";
import { WriteLedger } from "./write-ledger.js";

let unhandled: unknown[] = [];
const onUnhandled = (reason: unknown) => unhandled.push(reason);
let dir = "";

beforeEach(() => {
  unhandled = [];
  process.on("unhandledRejection", onUnhandled);
  dir = fs.mkdtempSync(path.join(os.tmpdir(), "keelson-snapshot-concurrency-"));
});
afterEach(() => {
  process.off("unhandledRejection", onUnhandled);
  fs.rmSync(dir, { recursive: true, force: true });
});

const drain = () => new Promise((resolve) => setTimeout(resolve, 50));
const wait = (ms: number) => new Promise<void>((resolve) => setTimeout(resolve, ms));

/** Raw access whose writes take 1 ms, and whose `failAt`-th write throws (a broken contract: a lane rejects). */
function throwingIo(failAt: number, state: { writes: number; inFlight: number }): VolumeIo {
  return {
    sizeBytes: 64 * 1024 * 1024,
    where: "fake",
    async write() {
      state.inFlight++;
      try {
        await wait(1);
        if (++state.writes === failAt) throw new Error(`write ${failAt} threw`);
        return undefined;
      } finally {
        state.inFlight--;
      }
    },
    async read() {
      return "no reads here";
    },
    async flush() {
      return undefined;
    },
    async close() {},
  };
}

describe("snapshot loads run side by side with target calls", () => {
  it("byte-exact: a write lane failing while a snapshot call runs is the check's error, every lane stopped", async () => {
    const state = { writes: 0, inFlight: 0 };
    const io = throwingIo(50, state);
    const ctx = fakeContext({ snapshot: () => wait(100) }, { timing: { phaseS: 0.8, faultWindowS: 1 } });
    const notes: string[] = [];
    const scope = new Scope(notes);
    await expect(snapshotsUnderLoad(ctx, scope, "vol", [io, io, io, io], new WriteLedger(512))).rejects.toThrow(/write 50 threw/);
    expect(state.inFlight).toBe(0);
    await drain();
    expect(unhandled).toEqual([]);
  });

  it("fs-crash: the file churn failing while the snapshot call runs is the check's error, not an unhandled rejection", async () => {
    const root = path.join(dir, "mnt");
    fs.mkdirSync(root);
    const ctx = fakeContext({
      attach: async (request) => ({
        volume: request.volume,
        nodeId: "n1",
        dataPath: { kind: "filesystem", mountPath: root, fsType: "ext4" },
        detach: async () => undefined,
      }),
      // The churn's directory vanishes under it while the call runs: its next write fails. Moved away, not
      // removed: a removal races the churn's writes on the thread pool (rmdir then fails with ENOTEMPTY).
      snapshot: async () => {
        for (const name of ["unsynced", "late"]) {
          if (fs.existsSync(path.join(root, name))) fs.renameSync(path.join(root, name), path.join(dir, `${name}-gone`));
        }
        await wait(300);
      },
    });
    const notes: string[] = [];
    await expect(writeAndSnapshot(ctx, new Scope(notes), "vol", notes)).rejects.toThrow(/ENOENT/);
    await drain();
    expect(unhandled).toEqual([]);
  });
});
