import { spawn } from "node:child_process";
import crypto from "node:crypto";
import fs from "node:fs";
import path from "node:path";
import { describe, expect, it } from "vitest";
import { LocalCluster } from "../src/local-cluster/local-cluster.js";
import { startDaemon, tempDir } from "./helpers/daemon.js";
import { canRun } from "./helpers/env.js";
import { run } from "./helpers/process.js";

const MIB = 1024 * 1024;

describe("real NBD clients against keelsond", () => {
  it("nbdinfo --list shows every volume with its size", async (t) => {
    if (!canRun({ tools: ["nbdinfo"] }, t.task.name)) return t.skip();
    using dir = tempDir("keelson-list-");
    await using d = await startDaemon({ poolPath: path.join(dir.path, "pool.img"), poolSize: "1G", dir: dir.path });
    const c = d.client();
    await c.createVolume({ name: "alpha", sizeBytes: 64 * MIB });
    await c.createVolume({ name: "beta", sizeBytes: 300 * MIB });
    const out = await run("nbdinfo", ["--list", "--json", `nbd://${d.nbdAddress}`]);
    const exports = (JSON.parse(out.stdout) as { exports: Array<{ "export-name": string; "export-size": number }> }).exports;
    const sizes = Object.fromEntries(exports.map((e) => [e["export-name"], e["export-size"]]));
    expect(sizes).toEqual({ alpha: 64 * MIB, beta: 300 * MIB });
  });

  it("nbdcopy writes 256 MiB of random data and reads it back byte for byte (TCP and unix socket)", async (t) => {
    if (!canRun({ tools: ["nbdcopy"] }, t.task.name)) return t.skip();
    using dir = tempDir("keelson-copy-");
    await using d = await startDaemon({ poolPath: path.join(dir.path, "pool.img"), poolSize: "1G", dir: dir.path });
    await d.client().createVolume({ name: "data", sizeBytes: 256 * MIB });
    const src = path.join(dir.path, "src.bin");
    fs.writeFileSync(src, crypto.randomBytes(256 * MIB));
    await run("nbdcopy", [src, d.uri("data")]);
    const back = path.join(dir.path, "back.bin");
    await run("nbdcopy", [`nbd+unix:///data?socket=${d.nbdSocket}`, back]);
    const a = fs.readFileSync(src);
    const b = fs.readFileSync(back);
    expect(b.length).toBe(a.length);
    expect(a.equals(b)).toBe(true);
  });

  it("fio nbd engine: randwrite then crc32c verify at iodepth 32 over 2 connections", async (t) => {
    if (!canRun({ tools: ["fio"] }, t.task.name)) return t.skip();
    using dir = tempDir("keelson-fio-");
    await using d = await startDaemon({ poolPath: path.join(dir.path, "pool.img"), poolSize: "1G", dir: dir.path });
    await d.client().createVolume({ name: "fio", sizeBytes: 256 * MIB });
    const out = await run("fio", [
      "--name=verify",
      "--ioengine=nbd",
      `--uri=${d.uri("fio")}`,
      "--rw=randwrite",
      "--bs=4k",
      "--iodepth=32",
      "--numjobs=2",
      "--size=96M",
      "--offset_increment=128M",
      "--verify=crc32c",
      "--do_verify=1",
      "--verify_fatal=1",
      "--group_reporting",
      "--output-format=json",
    ]);
    const job = (
      JSON.parse(out.stdout.slice(out.stdout.indexOf("{"))) as {
        jobs: Array<{ error: number; write: { io_bytes: number }; read: { io_bytes: number } }>;
      }
    ).jobs[0];
    expect(job?.error).toBe(0);
    expect(job?.write.io_bytes).toBe(2 * 96 * MIB);
    // The verify phase reads back everything that was written.
    expect(job?.read.io_bytes).toBe(2 * 96 * MIB);
  });

  it("nbdcopy (libnbd, structured replies): a read after the attachment was fenced fails EPERM, and libnbd gets the server's EPOCH_STALE message", async (t) => {
    if (!canRun({ tools: ["nbdcopy", "etcd"] }, t.task.name)) return t.skip();
    using dir = tempDir("keelson-sr-");
    // Epochs are the cluster's: a two-node cluster grants them; the replica is read at epoch 1 through the
    // node's unix socket (read-only inspection), and a new attachment (epoch 2) fences it.
    await using cluster = await LocalCluster.start({ nodes: 2, dir: dir.path, isolation: "loopback" });
    const c = cluster.client(0);
    const node = cluster.nodes[0];
    if (!node) throw new Error("no node");
    await c.createVolume({ name: "f", sizeBytes: 16 * MIB, replicas: 2 });
    expect((await c.attachVolume({ name: "f" })).epoch).toBe(1);
    // Data everywhere: nbdcopy asks for block status and would read nothing from an empty volume.
    const src = path.join(dir.path, "f.bin");
    fs.writeFileSync(src, crypto.randomBytes(16 * MIB));
    await run("nbdcopy", [src, `nbd+unix:///f?socket=${encodeURIComponent(node.nbdSocket)}`]);
    // nbdcopy reads into a pipe nobody drains yet, so it stalls after its first reads with the
    // connection open; the volume is then fenced at epoch 2 and every later read is refused.
    const replicaConnections = async () => (await c.getVolume({ name: "f", replicaOnly: true })).connections;
    // The frontend's own handle on its local replica counts too: nbdcopy's come on top of it.
    const before = await replicaConnections();
    const uri = `nbd+unix:///f%231?socket=${encodeURIComponent(node.nbdSocket)}`;
    const copy = spawn("nbdcopy", ["-v", uri, "-"], { stdio: ["ignore", "pipe", "pipe"] });
    const stderr: Buffer[] = [];
    copy.stderr.on("data", (b: Buffer) => stderr.push(b));
    const exited = new Promise<number | null>((resolve) => copy.on("close", resolve));
    try {
      for (let i = 0; i < 100 && (await replicaConnections()) === before; i++) await new Promise((r) => setTimeout(r, 50));
      expect(await replicaConnections()).toBeGreaterThan(before);
      await c.detachVolume({ name: "f" });
      expect((await c.attachVolume({ name: "f" })).epoch).toBe(2);
      let copiedBytes = 0;
      copy.stdout.on("data", (b: Buffer) => {
        copiedBytes += b.length;
      });
      expect(await exited).not.toBe(0);
      expect(copiedBytes).toBeLessThan(16 * MIB);
    } finally {
      copy.kill("SIGKILL");
    }
    const log = Buffer.concat(stderr).toString();
    expect(log).toContain("negotiated structured replies");
    expect(log).toContain(
      "structured error server message: EPOCH_STALE: volume f is fenced at epoch 2; this connection holds epoch 1",
    );
    expect(log).toMatch(/failed: Operation not permitted/);
  });

  it("qemu-img convert from a raw image into a volume and back gives identical bytes", async (t) => {
    if (!canRun({ tools: ["qemu-img"] }, t.task.name)) return t.skip();
    using dir = tempDir("keelson-qemu-");
    await using d = await startDaemon({ poolPath: path.join(dir.path, "pool.img"), poolSize: "1G", dir: dir.path });
    await d.client().createVolume({ name: "img", sizeBytes: 64 * MIB });
    const src = path.join(dir.path, "src.raw");
    // A sparse image with data islands, so zero detection and holes are exercised too.
    const fd = fs.openSync(src, "w");
    fs.ftruncateSync(fd, 64 * MIB);
    for (const at of [0, 5 * MIB + 512, 33 * MIB, 63 * MIB])
      fs.writeSync(fd, crypto.randomBytes(Math.min(700 * 1024, 64 * MIB - at)), 0, undefined, at);
    fs.closeSync(fd);
    await run("qemu-img", ["convert", "-n", "-f", "raw", "-O", "raw", src, d.uri("img")]);
    const back = path.join(dir.path, "back.raw");
    await run("qemu-img", ["convert", "-f", "raw", "-O", "raw", d.uri("img"), back]);
    expect(fs.readFileSync(back).equals(fs.readFileSync(src))).toBe(true);
  });
});
