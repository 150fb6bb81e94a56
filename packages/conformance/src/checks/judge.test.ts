import { describe, expect, it } from "vitest";
import type { Profile } from "../profile/profile.js";
import type { Check } from "./check.js";
import { judge } from "./judge.js";

const CHECK: Check = { id: "ha.x", family: "ha", title: "x", measures: "x", needs: [], run: async () => ({ figures: [] }) };
const T = { startedAt: "2026-11-30T00:00:00Z", durationMs: 1 };
const PROFILE: Profile = {
  name: "p",
  path: "",
  thresholds: { "ha.x": { lostWrites: { max: 0 }, rtoMs: { max: 100 } } },
  knownFailures: { "ha.x": { issue: "issue 9", reason: "slow" } },
};
const fig = (name: string, value: number) => ({ name, value, unit: "ms", better: "lower" as const });

describe("judge", () => {
  it("passes figures within their bounds and marks unbounded ones as info", () => {
    const r = judge(CHECK, { figures: [fig("lostWrites", 0), fig("rtoMs", 99), fig("other", 5)] }, PROFILE, T);
    expect(r.verdict).toBe("pass");
    expect(r.figures.map((f) => f.verdict)).toEqual(["pass", "pass", "info"]);
    expect(r.knownFailure).toBeUndefined();
  });

  it("fails a figure out of bounds saying what was expected and what was measured, and marks a known failure", () => {
    const r = judge(CHECK, { figures: [fig("lostWrites", 0), fig("rtoMs", 250)] }, PROFILE, T);
    expect(r.verdict).toBe("fail");
    expect(r.message).toBe("rtoMs: expected <= 100 ms, measured 250 ms");
    expect(r.knownFailure).toEqual({ issue: "issue 9", reason: "slow" });
  });

  it("fails a bound the check did not measure, and an unmeasured (NaN) figure a bound names; a violation fails alone", () => {
    expect(judge(CHECK, { figures: [fig("lostWrites", 0)] }, PROFILE, T).message).toMatch(
      /rtoMs: bounded by the profile but not measured/,
    );
    const nan = judge(CHECK, { figures: [fig("lostWrites", 0), fig("rtoMs", Number.NaN)] }, PROFILE, T);
    expect(nan.verdict).toBe("fail");
    expect(nan.figures.map((f) => f.name)).toEqual(["lostWrites"]);
    const v = judge(CHECK, { figures: [fig("lostWrites", 0), fig("rtoMs", 1)], violations: ["chunk 3 torn"] }, PROFILE, T);
    expect(v).toMatchObject({ verdict: "fail", message: "chunk 3 torn" });
  });
});
