import { describe, expect, it } from "vitest";
import { seededRandom } from "../random.js";
import { type FaultKind, faultPlan } from "./fault-campaign.js";

describe("faultPlan", () => {
  it("spreads the kinds evenly in a seeded random order", () => {
    const kinds: FaultKind[] = ["replica-kill", "serving-kill", "serving-partition"];
    const plan = faultPlan(kinds, 10, seededRandom(7));
    expect(plan).toHaveLength(10);
    for (const k of kinds) expect(plan.filter((p) => p === k).length).toBeGreaterThanOrEqual(3);
    expect(faultPlan(kinds, 10, seededRandom(7))).toEqual(plan);
    expect(faultPlan(kinds, 10, seededRandom(8))).not.toEqual(plan);
    expect(faultPlan(["replica-kill"], 2, seededRandom(1))).toEqual(["replica-kill", "replica-kill"]);
  });
});
