import { existsSync, mkdtempSync, readdirSync, readFileSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { afterEach, describe, expect, it } from "vitest";
import { sampleReport } from "./sample.js";
import type { Report } from "./types.js";
import { readReport } from "./validate.js";
import { REPORT_HTML, REPORT_JSON, REPORT_JUNIT, reRender, writeReport } from "./write.js";

describe("writeReport and reRender", () => {
  const dirs: string[] = [];
  const freshDir = (): string => {
    const d = mkdtempSync(join(tmpdir(), "keelson-write-"));
    dirs.push(d);
    return d;
  };
  afterEach(() => {
    for (const d of dirs.splice(0)) rmSync(d, { recursive: true, force: true });
  });

  it("writes the three files; report.json reads back equal, 2-space indented; no temp file left", () => {
    const dir = join(freshDir(), "run", "nested");
    const paths = writeReport(dir, sampleReport());
    expect(paths).toEqual({
      jsonPath: join(dir, REPORT_JSON),
      htmlPath: join(dir, REPORT_HTML),
      junitPath: join(dir, REPORT_JUNIT),
    });
    expect(readReport(paths.jsonPath)).toEqual(sampleReport());
    expect(readFileSync(paths.jsonPath, "utf8")).toMatch(/^\{\n {2}"schemaVersion": 1,/);
    expect(readFileSync(paths.htmlPath, "utf8")).toMatch(/^<!doctype html>/);
    expect(readFileSync(paths.junitPath, "utf8")).toMatch(/^<\?xml/);
    expect(readdirSync(dir).sort()).toEqual([REPORT_JUNIT, REPORT_HTML, REPORT_JSON].sort());
  });

  it("an invalid report is refused with SCHEMA_INVALID and nothing is written", () => {
    const dir = join(freshDir(), "out");
    const broken = sampleReport() as unknown as { checks: { verdict: string }[] };
    broken.checks[0]!.verdict = "great";
    expect(() => writeReport(dir, broken as unknown as Report)).toThrow(expect.objectContaining({ code: "SCHEMA_INVALID" }));
    expect(existsSync(dir)).toBe(false);
  });

  it("a NaN figure, which JSON would turn into null, is refused rather than written", () => {
    const dir = freshDir();
    const report = sampleReport();
    report.checks[0]!.figures[0]!.value = Number.NaN;
    expect(() => writeReport(dir, report)).toThrow(/\/checks\/0\/figures\/0\/value must be number/);
    expect(readdirSync(dir)).toEqual([]);
  });

  it("an invalid report does not replace a valid one already there", () => {
    const dir = freshDir();
    writeReport(dir, sampleReport());
    const before = readFileSync(join(dir, REPORT_JSON), "utf8");
    const broken = { ...sampleReport(), schemaVersion: 2 } as unknown as Report;
    expect(() => writeReport(dir, broken)).toThrow(/schemaVersion 2/);
    expect(readFileSync(join(dir, REPORT_JSON), "utf8")).toBe(before);
  });

  it("reRender rewrites the HTML and JUnit from report.json, which stays as it was", () => {
    const dir = freshDir();
    const paths = writeReport(dir, sampleReport());
    const json = readFileSync(paths.jsonPath, "utf8");
    const html = readFileSync(paths.htmlPath, "utf8");
    rmSync(paths.htmlPath);
    writeFileSync(paths.junitPath, "stale");
    expect(reRender(dir)).toEqual(paths);
    expect(readFileSync(paths.htmlPath, "utf8")).toBe(html);
    expect(readFileSync(paths.junitPath, "utf8")).toMatch(/^<\?xml/);
    expect(readFileSync(paths.jsonPath, "utf8")).toBe(json);
  });

  it("reRender of a directory without report.json: INVALID_ARGUMENT naming the file", () => {
    const dir = freshDir();
    expect(() => reRender(dir)).toThrow(
      expect.objectContaining({ code: "INVALID_ARGUMENT", message: `report ${join(dir, REPORT_JSON)} does not exist` }),
    );
  });

  it("reRender of an invalid report.json: SCHEMA_INVALID, and the renderings are left alone", () => {
    const dir = freshDir();
    writeFileSync(join(dir, REPORT_JSON), JSON.stringify({ schemaVersion: 1, checks: [] }));
    expect(() => reRender(dir)).toThrow(expect.objectContaining({ code: "SCHEMA_INVALID" }));
    expect(readdirSync(dir)).toEqual([REPORT_JSON]);
  });
});
