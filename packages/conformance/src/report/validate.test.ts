import { mkdtempSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { afterEach, describe, expect, expectTypeOf, it } from "vitest";
import { sampleReport } from "./sample.js";
import type { Report } from "./types.js";
import { REPORT_SCHEMA_URL, readReport, validateReport } from "./validate.js";

/** Every field, optional ones included, required at every depth: the literal below must set them all. */
type DeepRequired<T> = T extends readonly (infer U)[]
  ? DeepRequired<U>[]
  : T extends object
    ? { [K in keyof T]-?: DeepRequired<T[K]> }
    : T;

type OptionalKeysOf<T> = { [K in keyof T]-?: object extends Pick<T, K> ? K : never }[keyof T];

/** Names of the optional properties anywhere in T (records with string keys excepted). */
type DeepOptionalKeys<T> = T extends readonly (infer U)[]
  ? DeepOptionalKeys<U>
  : T extends object
    ? string extends keyof T
      ? never
      : OptionalKeysOf<T> | { [K in keyof T]-?: DeepOptionalKeys<NonNullable<T[K]>> }[keyof T]
    : never;

/** The optional property names of Report at any depth; the type assertion below keeps this list honest. */
const OPTIONAL_KEYS = ["min", "max", "description", "threshold", "notes", "knownFailure"] as const;

/** One of everything, every optional field set. A field added to Report breaks this literal (tsc) or the schema test. */
const FULL: Report = {
  schemaVersion: 1,
  startedAt: "2025-01-01T00:00:00.000Z",
  finishedAt: "2025-01-01T00:01:00.000Z",
  environment: {
    kernel: "6.1.0",
    cpuCount: 2,
    cpuModel: "cpu",
    memoryBytes: 1024,
    fioVersion: "fio-3.33",
    nodeVersion: "v20.0.0",
    suiteVersion: "0.1.0",
    gitCommit: "abc",
    target: "t",
    targetDescription: { nodes: "3" },
    duration: "short",
    root: false,
  },
  options: { suites: ["ha"], checks: ["ha.partition"], faults: 1, nodes: 3, seed: 9, profileName: "p", profilePath: "p.yaml" },
  summary: { pass: 0, fail: 1, notApplicable: 0, error: 0 },
  checks: [
    {
      id: "ha.x",
      family: "ha",
      title: "x",
      verdict: "fail",
      message: "m",
      figures: [
        {
          name: "stallMs",
          value: 1,
          unit: "ms",
          better: "lower",
          threshold: { min: 0, max: 5 },
          verdict: "pass",
          description: "d",
        },
      ],
      series: [
        {
          name: "iops",
          unit: "IOPS",
          intervalMs: 1000,
          points: [1, 0],
          marks: [{ atMs: 500, label: "kill", kind: "fault" }],
          stalls: [{ fromMs: 1000, toMs: 2000 }],
        },
      ],
      latency: [{ profile: "r", replicas: 1, iops: 1, mibPerSec: 1, percentiles: [{ percentile: 99, latencyUs: 5 }] }],
      notes: ["n"],
      startedAt: "2025-01-01T00:00:00.000Z",
      durationMs: 10,
      knownFailure: { issue: "#1", reason: "r" },
    },
  ],
} satisfies DeepRequired<Report>;

/** JSON paths of every object property in `value`, except the entries of string-keyed records. */
function propertyPaths(value: unknown, path: (string | number)[] = []): { path: (string | number)[]; key: string }[] {
  if (Array.isArray(value)) return value.flatMap((v, i) => propertyPaths(v, [...path, i]));
  if (typeof value !== "object" || value === null) return [];
  if (path.at(-1) === "targetDescription") return [];
  return Object.entries(value).flatMap(([k, v]) => [{ path, key: k }, ...propertyPaths(v, [...path, k])]);
}

function without(report: Report, path: (string | number)[], key: string): unknown {
  const copy = structuredClone(report) as unknown as Record<string | number, unknown>;
  let node: Record<string | number, unknown> = copy;
  for (const p of path) node = node[p] as Record<string | number, unknown>;
  delete node[key];
  return copy;
}

/** Property names the schema declares anywhere. */
function schemaPropertyNames(schema: unknown): Set<string> {
  const names = new Set<string>();
  const walk = (node: unknown): void => {
    if (typeof node !== "object" || node === null) return;
    const props = (node as { properties?: Record<string, unknown> }).properties;
    if (props !== undefined) for (const k of Object.keys(props)) names.add(k);
    for (const v of Object.values(node)) walk(v);
  };
  walk(schema);
  return names;
}

describe("report schema and Report type stay in step", () => {
  it("the optional-key list is exactly the type's optional keys", () => {
    expectTypeOf<DeepOptionalKeys<Report>>().toEqualTypeOf<(typeof OPTIONAL_KEYS)[number]>();
  });

  it("a report with every optional field set validates, and comes back unchanged", () => {
    const copy = structuredClone(FULL);
    expect(validateReport(copy)).toEqual(FULL);
  });

  it("the schema declares no property the full sample lacks", async () => {
    const schema: unknown = JSON.parse(await import("node:fs").then((fs) => fs.readFileSync(REPORT_SCHEMA_URL, "utf8")));
    const inSample = new Set(propertyPaths(FULL).map((p) => p.key));
    const declared = schemaPropertyNames(schema);
    expect([...declared].filter((k) => !inSample.has(k))).toEqual([]);
  });

  it("removing a property: still valid exactly when the type marks it optional", () => {
    const optional = new Set<string>(OPTIONAL_KEYS);
    for (const { path, key } of propertyPaths(FULL)) {
      const where = [...path, key].join("/");
      const broken = without(FULL, path, key);
      if (optional.has(key)) expect(() => validateReport(broken), where).not.toThrow();
      else expect(() => validateReport(broken), where).toThrow(/SCHEMA_INVALID|does not validate/);
    }
  });

  it("the sample report validates", () => {
    expect(validateReport(sampleReport()).checks.length).toBeGreaterThan(0);
  });
});

describe("validateReport rejects broken reports", () => {
  it("a missing field: SCHEMA_INVALID naming its parent path", () => {
    const broken = without(FULL, ["environment"], "kernel");
    expect(() => validateReport(broken)).toThrow(
      expect.objectContaining({
        code: "SCHEMA_INVALID",
        message: expect.stringContaining("/environment must have required property 'kernel'"),
      }),
    );
  });

  it("a wrong enum: SCHEMA_INVALID listing the valid values", () => {
    const broken = structuredClone(FULL) as unknown as { checks: { verdict: string }[] };
    broken.checks[0]!.verdict = "passed";
    expect(() => validateReport(broken)).toThrow(
      expect.objectContaining({
        code: "SCHEMA_INVALID",
        message: expect.stringContaining('/checks/0/verdict must be one of "pass", "fail", "not-applicable", "error"'),
      }),
    );
  });

  it("an unknown property: SCHEMA_INVALID naming it", () => {
    const broken = { ...structuredClone(FULL), extra: true };
    expect(() => validateReport(broken)).toThrow(/has unknown property "extra"/);
  });

  it("NaN and Infinity are not numbers a report may hold", () => {
    const broken = structuredClone(FULL);
    broken.checks[0]!.figures[0]!.value = Number.NaN;
    expect(() => validateReport(broken)).toThrow(/\/checks\/0\/figures\/0\/value must be number/);
  });

  it("another schema version: says which one it reads", () => {
    const broken = { ...structuredClone(FULL), schemaVersion: 2 };
    expect(() => validateReport(broken, "old.json")).toThrow(
      "old.json has schemaVersion 2; this suite reads schemaVersion 1 only",
    );
  });

  it("not an object at all", () => {
    expect(() => validateReport("report")).toThrow(/\(root\) must be object/);
  });

  it("many problems: the first few are listed and the rest counted", () => {
    const broken = structuredClone(FULL) as unknown as Record<string, unknown>;
    for (const k of ["startedAt", "finishedAt", "environment", "options", "summary", "checks"]) delete broken[k];
    expect(() => validateReport(broken)).toThrow(/; and 1 more$/);
  });
});

describe("readReport", () => {
  const dirs: string[] = [];
  const freshDir = (): string => {
    const d = mkdtempSync(join(tmpdir(), "keelson-read-"));
    dirs.push(d);
    return d;
  };
  afterEach(() => {
    for (const d of dirs.splice(0)) rmSync(d, { recursive: true, force: true });
  });

  it("reads back what was written", () => {
    const path = join(freshDir(), "report.json");
    writeFileSync(path, JSON.stringify(sampleReport()));
    expect(readReport(path)).toEqual(sampleReport());
  });

  it("a missing file: INVALID_ARGUMENT naming the path", () => {
    const path = join(freshDir(), "nope.json");
    expect(() => readReport(path)).toThrow(
      expect.objectContaining({ code: "INVALID_ARGUMENT", message: `report ${path} does not exist` }),
    );
  });

  it("a file that is not JSON: INVALID_ARGUMENT naming the path", () => {
    const path = join(freshDir(), "report.json");
    writeFileSync(path, "{ not json");
    expect(() => readReport(path)).toThrow(
      expect.objectContaining({ code: "INVALID_ARGUMENT", message: expect.stringContaining(`report ${path} is not JSON`) }),
    );
  });

  it("JSON that is not a report: SCHEMA_INVALID naming the path", () => {
    const path = join(freshDir(), "report.json");
    writeFileSync(path, JSON.stringify({ schemaVersion: 1 }));
    expect(() => readReport(path)).toThrow(
      expect.objectContaining({ code: "SCHEMA_INVALID", message: expect.stringContaining(path) }),
    );
  });
});
