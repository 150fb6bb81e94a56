import { execFileSync } from "node:child_process";
import fs from "node:fs";
import os from "node:os";
import path from "node:path";
import { afterEach, beforeEach, describe, expect, it } from "vitest";
import { isConformanceError } from "../../errors.js";
import { canRun } from "../../testing/env.js";
import { mustFlush, mustRead, mustWrite, openVolumeIo } from "./volume-io.js";

describe("raw I/O on a block data path", () => {
  let dir: string;
  let file: string;

  beforeEach(() => {
    dir = fs.mkdtempSync(path.join(os.tmpdir(), "kc-volume-io-"));
    file = path.join(dir, "disk");
    fs.writeFileSync(file, Buffer.alloc(8 << 20));
  });

  afterEach(() => fs.rmSync(dir, { recursive: true, force: true }));

  it("writes, flushes and reads back the same bytes, in reads split at 4 MiB", async () => {
    const io = await openVolumeIo({ kind: "block", devicePath: file }, { readOnly: false });
    try {
      expect(io.sizeBytes).toBe(8 << 20);
      const data = Buffer.alloc(6 << 20);
      for (let i = 0; i < data.length; i++) data[i] = (i * 31) & 0xff;
      await mustWrite(io, 1 << 20, data);
      await mustFlush(io);
      expect((await mustRead(io, 1 << 20, 6 << 20)).equals(data)).toBe(true);
    } finally {
      await io.close();
    }
  });

  it("a block device node under another name (a CSI driver's published block volume) has its device's size", async (t) => {
    if (!canRun({ root: true, tools: ["losetup", "mknod"] }, t.task.name)) return t.skip();
    const loop = execFileSync("losetup", ["--find", "--show", file], { encoding: "utf8" }).trim();
    try {
      const { rdev } = fs.statSync(loop);
      const node = path.join(dir, "published-block-volume");
      execFileSync("mknod", [node, "b", String((rdev >> 8) & 0xfff), String((rdev & 0xff) | ((rdev >> 12) & 0xfff00))]);
      const io = await openVolumeIo({ kind: "block", devicePath: node }, { readOnly: true });
      try {
        expect(io.sizeBytes).toBe(8 << 20);
      } finally {
        await io.close();
      }
    } finally {
      execFileSync("losetup", ["--detach", loop]);
    }
  });

  it("a write to a read-only path comes back as a sentence, and mustWrite throws TARGET_FAILED", async () => {
    const io = await openVolumeIo({ kind: "block", devicePath: file }, { readOnly: true });
    try {
      expect(await io.write(0, Buffer.alloc(512))).toMatch(/^write at 0 on .*disk: /);
      await expect(mustWrite(io, 0, Buffer.alloc(512))).rejects.toMatchObject({ code: "TARGET_FAILED" });
    } finally {
      await io.close();
    }
  });

  it("a mounted filesystem has no raw access: NOT_SUPPORTED names the kind", async () => {
    const error = await openVolumeIo({ kind: "filesystem", mountPath: dir, fsType: "ext4" }, { readOnly: true }).catch((e) => e);
    expect(isConformanceError(error) && error.code).toBe("NOT_SUPPORTED");
    expect((error as Error).message).toMatch(/the target gave "filesystem"/);
  });
});
