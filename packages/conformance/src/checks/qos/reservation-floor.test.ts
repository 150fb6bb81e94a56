// qos.reservation-floor against a fake target: a reservation at or below the
// victim's even share proves nothing about reservations, so it fails.

import { beforeEach, describe, expect, it, vi } from "vitest";
import type { Profile } from "../../profile/profile.js";
import type { Target } from "../../target/target.js";
import { fakeContext } from "../common/fake-context.js";
import { FakeFio } from "../common/fake-fio.js";
import { judge } from "../judge.js";

const fio = new FakeFio();
vi.mock("./load.js", async (importOriginal) => ({
  ...(await importOriginal<typeof import("./load.js")>()),
  runLoad: (...args: Parameters<FakeFio["runLoad"]>) => fio.runLoad(...args),
  // The real prefill calls fio inside load.ts, past the mock.
  prefill: async () => undefined,
}));
const { reservationFloor } = await import("./reservation-floor.js");
const { QOS_DEFAULT_THRESHOLDS } = await import("./index.js");

const PROFILE: Profile = { name: "default", path: "", thresholds: QOS_DEFAULT_THRESHOLDS };

/** One node, every volume on it, every reservation admitted. */
const oneNode: Partial<Target> = {
  nodeIds: () => ["n1"],
  provision: async (request) => ({ name: request.name, sizeBytes: request.sizeBytes, replicas: request.replicas }),
  deleteVolume: async () => undefined,
  health: async () => ({ state: "healthy", servingNode: "n1", replicas: [{ nodeId: "n1", state: "healthy" }] }),
  setQos: async () => undefined,
  attach: async (request) => ({
    volume: request.volume,
    nodeId: "n1",
    dataPath: { kind: "nbd", uri: "nbd+unix:///x?socket=/nowhere" },
    detach: async () => undefined,
  }),
};

async function runFloor(victimIops: number, neighbourIops: number) {
  fio.jobs.set("victim-alone", { iops: 1000 });
  fio.jobs.set("victim", { iops: victimIops });
  for (let i = 0; i < 3; i++) fio.jobs.set(`neighbour-${i}`, { iops: neighbourIops });
  const outcome = await reservationFloor.run(fakeContext(oneNode));
  return judge(reservationFloor, outcome, PROFILE, { startedAt: "", durationMs: 0 });
}

beforeEach(() => fio.reset());

describe("qos.reservation-floor", () => {
  it("the reservation (400 IOPS) is below an even split (563 IOPS): fails, though the victim got its reservation", async () => {
    const result = await runFloor(450, 600);
    expect(result.verdict, result.message).toBe("fail");
    expect(result.message).toMatch(/the reservation \(400 IOPS\) was not above an even split .* \(563 IOPS\)/);
    expect(result.figures.find((f) => f.name === "floorRatio")?.verdict).toBe("pass");
  });

  it("the reservation above an even split, and kept: passes", async () => {
    const result = await runFloor(450, 100);
    expect(result.verdict, result.message).toBe("pass");
  });
});
