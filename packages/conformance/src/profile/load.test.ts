import { describe, expect, it } from "vitest";
import YAML from "yaml";
import { parseProfile, profileToYaml } from "./load.js";

const DEFAULTS = { "ha.a": { lostWrites: { max: 0 }, rtoMs: { max: 30_000 } } };
const CHECKS = ["ha.a", "qos.b"];

describe("profiles", () => {
  it("override the defaults figure by figure and keep the rest", () => {
    const p = parseProfile(
      { name: "v", thresholds: { "ha.a": { rtoMs: { max: 5000 } }, "qos.b": { ratio: { min: 0.9, max: 1.1 } } } },
      "f",
      DEFAULTS,
      CHECKS,
    );
    expect(p.thresholds).toEqual({
      "ha.a": { lostWrites: { max: 0 }, rtoMs: { max: 5000 } },
      "qos.b": { ratio: { min: 0.9, max: 1.1 } },
    });
    expect(DEFAULTS["ha.a"].rtoMs.max).toBe(30_000);
  });

  it("refuse unknown checks, keys and bounds with the valid ones named", () => {
    expect(() => parseProfile({ thresholds: { "ha.zz": {} } }, "f", DEFAULTS, CHECKS)).toThrow(
      /unknown check ha\.zz; valid: ha\.a, qos\.b/,
    );
    expect(() => parseProfile({ thresholds: { "ha.a": { rtoMs: { most: 1 } } } }, "f", DEFAULTS, CHECKS)).toThrow(
      /not a bound; valid: min, max/,
    );
    expect(() => parseProfile({ thresholds: { "ha.a": { rtoMs: { min: 2, max: 1 } } } }, "f", DEFAULTS, CHECKS)).toThrow(
      /min 2 > max 1/,
    );
    expect(() => parseProfile({ extra: 1 }, "f", DEFAULTS, CHECKS)).toThrow(
      /unknown key extra; valid: name, thresholds, knownFailures/,
    );
  });

  it("read known failures, each with its issue and reason, and round-trip through YAML", () => {
    const doc = { name: "k", knownFailures: { "qos.b": { issue: "issue 16", reason: "the CPU is the bottleneck" } } };
    const p = parseProfile(doc, "f", DEFAULTS, CHECKS);
    expect(p.knownFailures).toEqual(doc.knownFailures);
    expect(parseProfile(YAML.parse(profileToYaml(p)), "f", DEFAULTS, CHECKS)).toMatchObject({ knownFailures: doc.knownFailures });
    expect(() => parseProfile({ knownFailures: { "qos.b": { issue: "" } } }, "f", DEFAULTS, CHECKS)).toThrow(
      /must be \{ issue: string, reason: string \}/,
    );
    expect(() => parseProfile({ knownFailures: { "x.y": { issue: "i", reason: "r" } } }, "f", DEFAULTS, CHECKS)).toThrow(
      /unknown check x\.y/,
    );
  });
});
