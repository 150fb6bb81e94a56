// The QoS checks run loads side by side: a load that fails while another is
// still running must surface as the check's error, never as an unhandled
// rejection (which crashes the CLI before its cleanup), and no load may
// outlive the call that started it.

import { afterEach, beforeEach, describe, expect, it, vi } from "vitest";
import type { DataPath } from "../../target/target.js";
import { fakeContext } from "../common/fake-context.js";
import { FakeFio } from "../common/fake-fio.js";

const fio = new FakeFio();
vi.mock("./load.js", async (importOriginal) => ({
  ...(await importOriginal<typeof import("./load.js")>()),
  runLoad: (...args: Parameters<FakeFio["runLoad"]>) => fio.runLoad(...args),
}));
const { victimRun } = await import("./noisy-neighbour.js");
const { contend } = await import("./reservation-floor.js");
const { floodWithChange } = await import("./live-change.js");
const { runLoad } = await import("./load.js");

const NBD: DataPath = { kind: "nbd", uri: "nbd+unix:///x?socket=/nowhere" };
let unhandled: unknown[] = [];
const onUnhandled = (reason: unknown) => unhandled.push(reason);

beforeEach(() => {
  fio.reset();
  unhandled = [];
  process.on("unhandledRejection", onUnhandled);
});
afterEach(() => {
  process.off("unhandledRejection", onUnhandled);
});

/** A moment after everything settled, so that Node has had its chance to flag an unhandled rejection. */
const drain = () => new Promise((resolve) => setTimeout(resolve, 50));

describe("QoS loads run side by side", () => {
  it("noisy-neighbour: a neighbour flood failing during the victim's run is the check's error, not an unhandled rejection", async () => {
    fio.jobs.set("neighbour-limited", { failAfterMs: 100 });
    fio.jobs.set("victim-limited", { runMs: 1500 });
    await expect(victimRun(fakeContext(), NBD, 100, "limited", NBD)).rejects.toThrow(/fio neighbour-limited failed/);
    await drain();
    expect(unhandled).toEqual([]);
    expect([...fio.running]).toEqual([]);
  });

  it("noisy-neighbour: a neighbour flood failing while the victim runs stops the victim", async () => {
    fio.jobs.set("neighbour-limited", { failAfterMs: 1200 });
    fio.jobs.set("victim-limited", { runMs: 60_000 });
    await expect(victimRun(fakeContext(), NBD, 100, "limited", NBD)).rejects.toThrow(/fio neighbour-limited failed/);
    expect([...fio.running]).toEqual([]);
    // Stopped, not waited out: the fake fio records a job that its stop signal ended.
    expect(fio.cancelled).toEqual(["victim-limited"]);
  });

  it("noisy-neighbour: the victim failing stops the flood before the call throws", async () => {
    fio.jobs.set("neighbour-limited", { runMs: 60_000 });
    fio.jobs.set("victim-limited", { failAfterMs: 1100 });
    await expect(victimRun(fakeContext(), NBD, 100, "limited", NBD)).rejects.toThrow(/fio victim-limited failed/);
    expect([...fio.running]).toEqual([]);
    // Stopped, not waited out (a timing bound here failed on a busy CI machine).
    expect(fio.cancelled).toEqual(["neighbour-limited"]);
    await drain();
    expect(unhandled).toEqual([]);
  });

  it("reservation-floor: a neighbour flood failing before the victim finishes is the check's error, every flood settled", async () => {
    fio.jobs.set("neighbour-0", { failAfterMs: 100 });
    fio.jobs.set("victim", { runMs: 1500 });
    await expect(contend(fakeContext(), NBD, [NBD, NBD, NBD])).rejects.toThrow(/fio neighbour-0 failed/);
    await drain();
    expect(unhandled).toEqual([]);
    expect([...fio.running]).toEqual([]);
  });

  it("live-change: the flood failing during the pause before the change is the check's error, and no change is made", async () => {
    fio.jobs.set("live-change", { failAfterMs: 100 });
    const ctx = fakeContext({}, { timing: { phaseS: 1, faultWindowS: 1 } });
    const job = { name: "live-change", rw: "randread", blockSizeBytes: 4096, iodepth: 32, runtimeS: 2 } as const;
    let changed = false;
    await expect(
      floodWithChange(
        ctx,
        (stop) => runLoad(ctx, NBD, job, stop),
        async () => {
          changed = true;
        },
      ),
    ).rejects.toThrow(/fio live-change failed/);
    await drain();
    expect(unhandled).toEqual([]);
    expect(changed).toBe(false);
  });
});
