import { execFileSync } from "node:child_process";
import fs from "node:fs";
import os from "node:os";
import path from "node:path";
import { describe, expect, it } from "vitest";
import { ConformanceError } from "../errors.js";
import { canRun } from "../testing/env.js";
import { readFioReport } from "./fio-json.js";
import { fioJobFile } from "./job-file.js";
import { FioJsonSplitter, MAX_FIO_OBJECT_BYTES } from "./json-stream.js";

/** Real fio output: a 2 s time-based run with a status every second, plus its job's figures. */
function recordFioOutput(): string {
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), "keelson-jsonstream-"));
  try {
    const job = {
      name: "rec",
      rw: "randrw",
      readPercent: 50,
      blockSizeBytes: 4096,
      iodepth: 2,
      sizeBytes: 4 << 20,
      runtimeS: 2,
    } as const;
    const file = path.join(dir, "rec.fio");
    fs.writeFileSync(file, fioJobFile({ kind: "filesystem", mountPath: dir, fsType: "ext4" }, job));
    return execFileSync("fio", ["--output-format=json", "--status-interval=1", file], { encoding: "utf8" });
  } finally {
    fs.rmSync(dir, { recursive: true, force: true });
  }
}

/** Deterministic chunk sizes (mulberry32). */
function random(seed: number): () => number {
  let a = seed;
  return () => {
    a = (a + 0x6d2b79f5) | 0;
    let t = Math.imul(a ^ (a >>> 15), 1 | a);
    t = (t + Math.imul(t ^ (t >>> 7), 61 | t)) ^ t;
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
  };
}

function split(text: string, chunkSizes: () => number): { objects: string[]; splitter: FioJsonSplitter } {
  const splitter = new FioJsonSplitter();
  const objects: string[] = [];
  for (let at = 0; at < text.length; ) {
    const size = 1 + Math.floor(chunkSizes() * 300);
    splitter.push(text.slice(at, at + size), (o) => objects.push(o));
    at += size;
  }
  splitter.end((o) => objects.push(o));
  return { objects, splitter };
}

describe("FioJsonSplitter", () => {
  it("splits fio's real status stream, fed in random chunks, into every object it printed", (t) => {
    if (!canRun({ tools: ["fio"] }, t.task.name)) return t.skip();
    const text = recordFioOutput();
    const expected = text.split("\n").filter((l) => l === "{").length;
    expect(expected).toBeGreaterThanOrEqual(3); // two statuses and the final report
    const seed = Date.now() % 100_000;
    console.log(`FioJsonSplitter chunk seed ${seed}`);
    const { objects } = split(text, random(seed));
    expect(objects).toHaveLength(expected);
    const reports = objects.map((o) => readFioReport(JSON.parse(o)));
    // Cumulative counters grow status by status; the last object is the final report.
    for (let i = 1; i < reports.length; i++) {
      expect(reports[i]!.timestampMs).toBeGreaterThanOrEqual(reports[i - 1]!.timestampMs);
      expect(reports[i]!.read.ioBytes).toBeGreaterThanOrEqual(reports[i - 1]!.read.ioBytes);
    }
    expect(reports.at(-1)!.read.ioBytes).toBeGreaterThan(0);
    expect(reports.at(-1)!.write.ioBytes).toBeGreaterThan(0);
  });

  it("sets aside engine lines printed between objects and inside one", () => {
    const body = '{\n  "a" : 1,\n  "b" : {\n    "c" : 2\n  }\n}\n';
    const text = `fio: connected to NBD server\n${body}{\n  "a" : 2,\nfio: connected to NBD server\n  "b" : 3\n}\n`;
    const { objects, splitter } = split(text, () => 0.01);
    expect(objects.map((o) => JSON.parse(o))).toEqual([
      { a: 1, b: { c: 2 } },
      { a: 2, b: 3 },
    ]);
    expect(splitter.noise()).toBe("fio: connected to NBD server\nfio: connected to NBD server\n");
  });

  it("a last object without a trailing newline still counts; CRLF line ends are read", () => {
    const { objects } = split('{\r\n  "a" : 1\r\n}', () => 0.5);
    expect(objects.map((o) => JSON.parse(o))).toEqual([{ a: 1 }]);
  });

  it("refuses an object larger than its bound instead of holding it", () => {
    const splitter = new FioJsonSplitter();
    const line = `  "x" : "${"y".repeat(64 * 1024)}",\n`;
    let error: unknown;
    try {
      splitter.push("{\n", () => undefined);
      for (let held = 0; held <= MAX_FIO_OBJECT_BYTES; held += line.length) splitter.push(line, () => undefined);
    } catch (e) {
      error = e;
    }
    expect(error).toBeInstanceOf(ConformanceError);
    expect((error as ConformanceError).code).toBe("TOOL_FAILED");
    expect((error as ConformanceError).message).toContain(`${MAX_FIO_OBJECT_BYTES} bytes`);
  });

  it("refuses an endless line outside any object", () => {
    const splitter = new FioJsonSplitter();
    expect(() => splitter.push("z".repeat(MAX_FIO_OBJECT_BYTES + 1), () => undefined)).toThrow(ConformanceError);
  });
});
