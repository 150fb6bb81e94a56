import { mkdtempSync, readFileSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { fileURLToPath } from "node:url";
import { afterEach, describe, expect, it } from "vitest";
import { canRun } from "../testing/env.js";
import { renderInChromium } from "./chromium.js";
import { renderHtml } from "./html.js";
import { sampleReport } from "./sample.js";

/** Gitignored; kept after the run so a person can look at the page. */
const SCREENSHOT_PATH = fileURLToPath(new URL("../../artifacts/report-screenshot.png", import.meta.url));
const PNG_SIGNATURE = Buffer.from([0x89, 0x50, 0x4e, 0x47, 0x0d, 0x0a, 0x1a, 0x0a]);
const RENDER_TIMEOUT_MS = 60_000;

describe("report HTML in headless chromium", () => {
  const dirs: string[] = [];
  const freshDir = (): string => {
    const dir = mkdtempSync(join(tmpdir(), "keelson-html-"));
    dirs.push(dir);
    return dir;
  };
  afterEach(() => {
    for (const d of dirs.splice(0)) rmSync(d, { recursive: true, force: true });
  });

  it("the sample report renders with no console error and screenshots to a PNG", async (t) => {
    if (!canRun({ tools: ["chromium"] }, t.task.name)) return t.skip();
    const htmlPath = join(freshDir(), "report.html");
    writeFileSync(htmlPath, renderHtml(sampleReport()));
    const result = await renderInChromium({ htmlPath, screenshotPath: SCREENSHOT_PATH, timeoutMs: RENDER_TIMEOUT_MS });
    expect(result.consoleErrors).toEqual([]);
    const png = readFileSync(result.screenshotPath);
    expect(png.subarray(0, 8).equals(PNG_SIGNATURE)).toBe(true);
    // IHDR width at byte 16: the screenshot is the full 1280-px viewport width, and taller than one screen.
    expect(png.readUInt32BE(16)).toBe(1280);
    expect(png.readUInt32BE(20)).toBeGreaterThan(900);
  });

  it("a page that throws and logs errors: every one is collected", async (t) => {
    if (!canRun({ tools: ["chromium"] }, t.task.name)) return t.skip();
    const dir = freshDir();
    const htmlPath = join(dir, "broken.html");
    writeFileSync(
      htmlPath,
      `<!doctype html><title>broken</title><link rel="icon" href="data:,"><p>x</p><script>console.error("first", 42); console.warn("second"); throw new Error("third");</script>`,
    );
    const result = await renderInChromium({ htmlPath, screenshotPath: join(dir, "broken.png"), timeoutMs: RENDER_TIMEOUT_MS });
    expect(result.consoleErrors).toHaveLength(3);
    expect(result.consoleErrors[0]).toBe("console.error: first 42");
    expect(result.consoleErrors[1]).toBe("console.warn: second");
    expect(result.consoleErrors[2]).toContain("Error: third");
  });

  it("a missing file: TOOL_FAILED naming it, and the browser is gone", async (t) => {
    if (!canRun({ tools: ["chromium"] }, t.task.name)) return t.skip();
    const dir = freshDir();
    const htmlPath = join(dir, "missing.html");
    await expect(
      renderInChromium({ htmlPath, screenshotPath: join(dir, "x.png"), timeoutMs: RENDER_TIMEOUT_MS }),
    ).rejects.toMatchObject({
      code: "TOOL_FAILED",
      message: expect.stringContaining("missing.html"),
    });
  });
});
