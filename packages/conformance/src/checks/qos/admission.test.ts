// qos.admission against fake targets: what a target admits is judged per
// node against one disk, and a target that admits nothing proves nothing.

import { beforeEach, describe, expect, it, vi } from "vitest";
import { ConformanceError } from "../../errors.js";
import type { Profile } from "../../profile/profile.js";
import type { ProvisionRequest, Target } from "../../target/target.js";
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
const { admission, nodeLoad } = await import("./admission.js");
const { QOS_DEFAULT_THRESHOLDS } = await import("./index.js");

const PROFILE: Profile = { name: "default", path: "", thresholds: QOS_DEFAULT_THRESHOLDS };
/** What the fake probe measures: one disk's capability. */
const DISK_IOPS = 1000;

/**
 * A target of `nodes` nodes that puts each new volume on the node `place`
 * picks and admits a reservation while the total reserved on all nodes
 * stays within `admitTotalIops`.
 */
function fakeTarget(nodes: string[], place: (index: number) => string, admitTotalIops: number): Partial<Target> {
  const volumes = new Map<string, { node: string; reservedIops: number }>();
  return {
    nodeIds: () => nodes,
    async provision(request: ProvisionRequest) {
      const reservedIops = request.qos?.reservationIops ?? 0;
      const total = [...volumes.values()].reduce((sum, v) => sum + v.reservedIops, 0);
      if (total + reservedIops > admitTotalIops) {
        throw new ConformanceError({ code: "ADMISSION_DENIED", message: `${reservedIops} IOPS reserved do not fit` });
      }
      volumes.set(request.name, { node: place(volumes.size), reservedIops });
      return { name: request.name, sizeBytes: request.sizeBytes, replicas: request.replicas };
    },
    async deleteVolume(name: string) {
      volumes.delete(name);
    },
    async health(name: string) {
      const node = volumes.get(name)?.node ?? "";
      return { state: "healthy", servingNode: node, replicas: node ? [{ nodeId: node, state: "healthy" }] : [] };
    },
    attach: async (request) => ({
      volume: request.volume,
      nodeId: "n1",
      dataPath: { kind: "nbd", uri: "nbd+unix:///x?socket=/nowhere" },
      detach: async () => undefined,
    }),
  };
}

async function runAdmission(target: Partial<Target>) {
  const outcome = await admission.run(fakeContext(target));
  return judge(admission, outcome, PROFILE, { startedAt: "", durationMs: 0 });
}

beforeEach(() => {
  fio.reset();
  fio.jobs.set("capability", { iops: DISK_IOPS });
});

describe("nodeLoad", () => {
  it("sums reservations per node; a volume the target did not place counts on the busiest node", () => {
    expect(
      nodeLoad([
        { reservedIops: 100, nodes: ["n1"] },
        { reservedIops: 100, nodes: ["n2"] },
        { reservedIops: 100, nodes: ["n1"] },
        { reservedIops: 50, nodes: [] },
      ]),
    ).toEqual({ busiestNode: "n1", busiestNodeIops: 250, unplacedIops: 50 });
    expect(nodeLoad([])).toEqual({ busiestNode: "", busiestNodeIops: 0, unplacedIops: 0 });
  });
});

describe("qos.admission", () => {
  it("three nodes, every single-replica volume on node 1, 1.5 disks' worth admitted there: fails, the busiest node judged against one disk", async () => {
    // Counted against three disks, 1500 IOPS would read as half of what was measured.
    const result = await runAdmission(fakeTarget(["n1", "n2", "n3"], () => "n1", 1.5 * DISK_IOPS));
    expect(result.verdict, result.message).toBe("fail");
    expect(result.message).toMatch(/admittedRatio: expected <= 1\.1 ratio, measured 1\.50? ratio/);
    expect(result.figures.find((f) => f.name === "busiestNodeReservedIops")?.value).toBe(1.5 * DISK_IOPS);
  });

  it("filling stops once the busiest node holds twice what one disk did: a target admitting without end is judged, not filled forever", async () => {
    const result = await runAdmission(fakeTarget(["n1", "n2", "n3"], () => "n1", Number.POSITIVE_INFINITY));
    expect(result.verdict, result.message).toBe("fail");
    expect(result.figures.find((f) => f.name === "admittedVolumes")?.value).toBe(8);
    expect(result.message).toMatch(/admittedRatio: expected <= 1\.1 ratio, measured 2 ratio/);
  });

  it("three nodes, volumes spread evenly, one disk's worth admitted per node: passes", async () => {
    const nodes = ["n1", "n2", "n3"];
    const result = await runAdmission(fakeTarget(nodes, (i) => nodes[i % 3] as string, 3 * DISK_IOPS));
    expect(result.verdict, result.message).toBe("pass");
    expect(result.figures.find((f) => f.name === "admittedRatio")?.value).toBe(1);
  });

  it("a target that refuses every reservation fails: admitting none proves nothing about admission", async () => {
    const result = await runAdmission(fakeTarget(["n1"], () => "n1", 0));
    expect(result.verdict, result.message).toBe("fail");
    expect(result.message).toMatch(/admittedVolumes: expected >= 1 count, measured 0 count/);
  });
});
