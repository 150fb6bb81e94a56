// Opens a report's HTML in headless Chromium, collects every console error,
// uncaught exception and browser log error, and takes a full-page screenshot.
// Tests use it to prove the page renders cleanly; it speaks the DevTools
// protocol over a pipe, so it needs no npm dependency and no free port.

import { type ChildProcess, spawn } from "node:child_process";
import { mkdirSync, mkdtempSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { dirname, join, resolve } from "node:path";
import { Readable, Writable } from "node:stream";
import { pathToFileURL } from "node:url";
import { ConformanceError } from "../errors.js";
import { CdpConnection, type CdpEvent } from "./cdp.js";

/** Debian's launcher script; it execs the browser, so the pid we spawn is the browser's. */
export const CHROMIUM_BINARY = "chromium";
/** Viewport width of the screenshot: a common laptop width, where the page's max-width layout applies. */
export const SCREENSHOT_WIDTH_PX = 1280;
/** Chromium cannot capture taller than its texture limit; longer pages are cut here. */
const MAX_SCREENSHOT_HEIGHT_PX = 16_384;
/** Console errors kept; a page that logs more is broken anyway and the count says so. */
const MAX_CONSOLE_ERRORS = 100;
/** Bytes of Chromium's stderr kept for error messages. */
const MAX_STDERR_BYTES = 8192;
/** How long Browser.close may take before the process group is killed. */
const CLOSE_GRACE_MS = 2000;

export interface RenderInChromiumOptions {
  htmlPath: string;
  /** Where the PNG goes; parent directories are created. */
  screenshotPath: string;
  /** For the whole render: launch, load, screenshot. */
  timeoutMs: number;
}

export interface RenderInChromiumResult {
  /** Uncaught exceptions, console.error/console.warn calls and browser log errors, in order; empty for a clean page. */
  consoleErrors: string[];
  screenshotPath: string;
}

/** Text of a console call's arguments, as DevTools would print them. */
function consoleText(params: Record<string, unknown>): string {
  const args = Array.isArray(params.args) ? (params.args as { value?: unknown; description?: string }[]) : [];
  return args.map((a) => (a.value !== undefined ? String(a.value) : (a.description ?? ""))).join(" ");
}

/** The message of an event that counts as a console error, or undefined for any other event. */
export function consoleErrorOf(event: CdpEvent): string | undefined {
  const p = event.params;
  if (event.method === "Runtime.exceptionThrown") {
    const details = (p.exceptionDetails ?? {}) as { text?: string; exception?: { description?: string } };
    return `uncaught: ${details.exception?.description ?? details.text ?? "exception"}`;
  }
  if (event.method === "Runtime.consoleAPICalled" && (p.type === "error" || p.type === "warning")) {
    return `console.${p.type === "warning" ? "warn" : "error"}: ${consoleText(p)}`;
  }
  if (event.method === "Log.entryAdded") {
    const entry = (p.entry ?? {}) as { level?: string; text?: string; url?: string };
    if (entry.level === "error") return `log: ${entry.text ?? ""}${entry.url === undefined ? "" : ` (${entry.url})`}`;
  }
  return undefined;
}

interface Launched {
  child: ChildProcess;
  cdp: CdpConnection;
  stderrTail(): string;
  exited: Promise<void>;
}

function launch(userDataDir: string): Launched {
  const args = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--remote-debugging-pipe",
    `--user-data-dir=${userDataDir}`,
    "--no-first-run",
    "--no-default-browser-check",
    "--hide-scrollbars",
    "about:blank",
  ];
  // detached: the browser leads its own process group, so killing -pid also ends its renderers.
  const child = spawn(CHROMIUM_BINARY, args, { stdio: ["ignore", "ignore", "pipe", "pipe", "pipe"], detached: true });
  const [toBrowser, fromBrowser] = [child.stdio[3], child.stdio[4]];
  if (!(toBrowser instanceof Writable) || !(fromBrowser instanceof Readable)) {
    throw new ConformanceError({ code: "INTERNAL", message: "spawn did not give pipes on fd 3 and 4" });
  }
  const cdp = new CdpConnection(toBrowser, fromBrowser);
  let stderr = "";
  child.stderr?.on("data", (chunk: Buffer) => {
    stderr = (stderr + chunk.toString("utf8")).slice(-MAX_STDERR_BYTES);
  });
  const exited = new Promise<void>((resolveExit) => {
    child.on("error", (error: NodeJS.ErrnoException) => {
      const code = error.code === "ENOENT" ? "TOOL_MISSING" : "TOOL_FAILED";
      cdp.fail(new ConformanceError({ code, message: `cannot start ${CHROMIUM_BINARY}: ${error.message}`, cause: error }));
      resolveExit();
    });
    child.on("exit", (code, signal) => {
      cdp.fail(
        new ConformanceError({
          code: "TOOL_FAILED",
          message: `${CHROMIUM_BINARY} exited (code ${code}, signal ${signal}): ${stderr.trim()}`,
        }),
      );
      resolveExit();
    });
  });
  return { child, cdp, stderrTail: () => stderr.trim(), exited };
}

/** Kills the browser's process group unless it has exited, then waits for the exit. */
async function stop(browser: Launched): Promise<void> {
  const { child, cdp, exited } = browser;
  if (child.exitCode === null && child.signalCode === null && child.pid !== undefined) {
    const closed = cdp.send("Browser.close").catch(() => undefined);
    const graceful = await Promise.race([exited.then(() => true), closed.then(() => delay(CLOSE_GRACE_MS)).then(() => false)]);
    if (!graceful && child.exitCode === null && child.signalCode === null) {
      try {
        process.kill(-child.pid, "SIGKILL");
      } catch {
        // Already gone between the check and the kill.
      }
    }
  }
  await exited;
}

function delay(ms: number): Promise<void> {
  return new Promise((r) => setTimeout(r, ms).unref());
}

/** Waits for the first event matching `match`; registered before the command that causes it is sent. */
function nextEvent(cdp: CdpConnection, match: (e: CdpEvent) => boolean): Promise<CdpEvent> {
  return new Promise((resolveEvent) => {
    let done = false;
    cdp.onEvent((e) => {
      if (!done && match(e)) {
        done = true;
        resolveEvent(e);
      }
    });
  });
}

async function renderPage(cdp: CdpConnection, options: RenderInChromiumOptions, errors: string[]): Promise<void> {
  const { targetId } = await cdp.send("Target.createTarget", { url: "about:blank" });
  const { sessionId } = (await cdp.send("Target.attachToTarget", { targetId, flatten: true })) as { sessionId: string };
  cdp.onEvent((e) => {
    const error = e.sessionId === sessionId ? consoleErrorOf(e) : undefined;
    if (error !== undefined && errors.length < MAX_CONSOLE_ERRORS) errors.push(error);
  });
  for (const domain of ["Page", "Runtime", "Log"]) await cdp.send(`${domain}.enable`, {}, sessionId);
  await cdp.send(
    "Emulation.setDeviceMetricsOverride",
    { width: SCREENSHOT_WIDTH_PX, height: 900, deviceScaleFactor: 1, mobile: false },
    sessionId,
  );
  const loaded = nextEvent(cdp, (e) => e.sessionId === sessionId && e.method === "Page.loadEventFired");
  const url = pathToFileURL(resolve(options.htmlPath)).href;
  const navigation = await cdp.send("Page.navigate", { url }, sessionId);
  if (typeof navigation.errorText === "string") {
    throw new ConformanceError({ code: "TOOL_FAILED", message: `chromium could not open ${url}: ${navigation.errorText}` });
  }
  await loaded;
  // A round trip after load: events sent before its reply (late console errors) have been handled.
  const metrics = (await cdp.send("Page.getLayoutMetrics", {}, sessionId)) as { cssContentSize?: { height?: number } };
  const heightPx = Math.min(MAX_SCREENSHOT_HEIGHT_PX, Math.ceil(metrics.cssContentSize?.height ?? 900));
  const shot = await cdp.send(
    "Page.captureScreenshot",
    { format: "png", captureBeyondViewport: true, clip: { x: 0, y: 0, width: SCREENSHOT_WIDTH_PX, height: heightPx, scale: 1 } },
    sessionId,
  );
  if (typeof shot.data !== "string")
    throw new ConformanceError({ code: "TOOL_FAILED", message: "chromium returned no screenshot data" });
  mkdirSync(dirname(options.screenshotPath), { recursive: true });
  writeFileSync(options.screenshotPath, Buffer.from(shot.data, "base64"));
}

/**
 * Opens `htmlPath` in a fresh headless Chromium (own profile in a temp dir),
 * waits for load, writes a full-page PNG and returns what the page logged as
 * errors. Always kills the browser it started and removes the temp dir.
 *
 * @throws ConformanceError TOOL_MISSING without chromium; TOOL_FAILED when it
 *   crashes, cannot open the file, or the render exceeds `timeoutMs`.
 */
export async function renderInChromium(options: RenderInChromiumOptions): Promise<RenderInChromiumResult> {
  const userDataDir = mkdtempSync(join(tmpdir(), "keelson-chromium-"));
  const errors: string[] = [];
  let browser: Launched | undefined;
  let timer: NodeJS.Timeout | undefined;
  try {
    browser = launch(userDataDir);
    const launched = browser;
    const timeout = new Promise<never>((_, reject) => {
      timer = setTimeout(() => {
        const error = new ConformanceError({
          code: "TOOL_FAILED",
          message: `chromium did not render ${options.htmlPath} within ${options.timeoutMs} ms: ${launched.stderrTail()}`,
        });
        launched.cdp.fail(error);
        reject(error);
      }, options.timeoutMs);
    });
    await Promise.race([renderPage(browser.cdp, options, errors), timeout]);
  } finally {
    clearTimeout(timer);
    if (browser !== undefined) await stop(browser);
    rmSync(userDataDir, { recursive: true, force: true });
  }
  return { consoleErrors: errors, screenshotPath: options.screenshotPath };
}
