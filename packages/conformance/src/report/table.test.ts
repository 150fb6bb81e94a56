import { describe, expect, it } from "vitest";
import { sampleReport } from "./sample.js";
import { renderSummaryTable } from "./table.js";

const ESC = "\x1b";

describe("renderSummaryTable", () => {
  it("without colour: plain text, a row per check, every column aligned", () => {
    const report = sampleReport();
    const text = renderSummaryTable(report, { color: false });
    expect(text).not.toContain(ESC);
    const lines = text.split("\n");
    const header = lines[0]!;
    const rows = lines.slice(1, 1 + report.checks.length);
    expect(rows.map((r) => r.split(/\s{2,}/)[0])).toEqual(report.checks.map((c) => c.id));
    for (const column of ["VERDICT", "FIGURE"]) {
      const at = header.indexOf(column);
      // Each row has a non-space at the column start and two spaces before it.
      for (const row of rows) expect(row.slice(at - 2, at + 1)).toMatch(/^ {2}\S$/);
    }
    expect(text).toContain("ha.partition                fail (known keelson#412)  stallMs 7,400 ms");
    expect(text).toContain("6 checks: 3 pass, 1 fail, 1 not applicable, 1 error");
  });

  it("with colour: verdicts painted, and the columns still line up once the codes are removed", () => {
    const report = sampleReport();
    const colored = renderSummaryTable(report, { color: true });
    expect(colored).toContain(`${ESC}[31m`);
    const stripped = colored.replaceAll(new RegExp(`${ESC}\\[\\d+m`, "g"), "");
    expect(stripped).toBe(renderSummaryTable(report, { color: false }));
  });
});
