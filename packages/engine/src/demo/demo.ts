// `npm run demo`: brings keelsond up on a fresh pool, creates a volume, and
// shows real NBD clients using it (nbdinfo, nbdcopy, fio; as root also a
// filesystem through nbdfuse + loop). `npm run demo -- --serve` keeps serving.
import { execFile, spawn, spawnSync } from "node:child_process";
import crypto from "node:crypto";
import fs from "node:fs";
import os from "node:os";
import path from "node:path";
import { promisify } from "node:util";
import { createClient } from "@keelson/sdk";
import { startEngine } from "../daemon/engine.js";
import { jsonLogger } from "../util/log.js";
import { formatBytes } from "../util/size.js";

const MIB = 1024 * 1024;
const has = (tool: string): boolean => spawnSync("sh", ["-c", `command -v ${tool}`]).status === 0;
const step = (text: string): void => console.log(`\n== ${text}`);
// The engine runs in this process: tools must run asynchronously or they would wait on a blocked event loop.
const sh = async (cmd: string, args: string[]): Promise<string> =>
  (await promisify(execFile)(cmd, args, { encoding: "utf8" })).stdout;

async function filesystemDemo(uri: string, dir: string): Promise<void> {
  const mnt = path.join(dir, "fuse");
  const target = path.join(dir, "mnt");
  fs.mkdirSync(mnt);
  fs.mkdirSync(target);
  const fuse = spawn("nbdfuse", [mnt, uri], { stdio: "ignore" });
  let loop = "";
  try {
    for (let i = 0; i < 100 && !fs.existsSync(path.join(mnt, "nbd")); i++) await new Promise((r) => setTimeout(r, 50));
    loop = (await sh("losetup", ["--find", "--show", path.join(mnt, "nbd")])).trim();
    step(`block device ${loop} (nbdfuse + loop, no kernel NBD needed): mkfs.ext4 and mount`);
    await sh("mkfs.ext4", ["-q", loop]);
    await sh("mount", [loop, target]);
    fs.writeFileSync(path.join(target, "hello.txt"), "stored on a keelson volume\n");
    console.log((await sh("df", ["-h", target])).trim());
    console.log(`${path.join(target, "hello.txt")}: ${fs.readFileSync(path.join(target, "hello.txt"), "utf8").trim()}`);
  } finally {
    await sh("umount", [target]).catch(() => "");
    if (loop) await sh("losetup", ["-d", loop]).catch(() => "");
    await sh("fusermount3", ["-u", mnt]).catch(() => "");
    fuse.kill();
  }
}

async function main(): Promise<void> {
  const serve = process.argv.includes("--serve");
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), "keelson-demo-"));
  step(`start keelsond on a 2 GiB sparse pool file ${dir}/pool.img`);
  const engine = await startEngine({
    poolPath: path.join(dir, "pool.img"),
    poolSizeBytes: 2048 * MIB,
    grpcAddress: "127.0.0.1:0",
    nbdAddress: "127.0.0.1:0",
    nbdSocket: path.join(dir, "nbd.sock"),
    log: jsonLogger("keelsond", fs.createWriteStream(path.join(dir, "keelsond.log"))),
  });
  const client = createClient({ address: engine.grpcAddress });
  try {
    step("create a 256 MiB thin volume through the SDK");
    const vol = await client.createVolume({ name: "demo", sizeBytes: 256 * MIB, labels: { app: "demo" } });
    console.log(`${vol.name}: ${formatBytes(vol.sizeBytes)}, export ${vol.export.nbdTcpUri}`);
    if (has("nbdinfo")) {
      step(`nbdinfo --list nbd://${engine.nbdAddress}`);
      console.log((await sh("nbdinfo", ["--list", `nbd://${engine.nbdAddress}`])).trim());
    }
    if (has("nbdcopy")) {
      step("nbdcopy 64 MiB of random data in and back out");
      const src = path.join(dir, "src.bin");
      const back = path.join(dir, "back.bin");
      fs.writeFileSync(src, crypto.randomBytes(64 * MIB));
      await sh("nbdcopy", [src, vol.export.nbdTcpUri]);
      await sh("nbdcopy", [vol.export.nbdTcpUri, back]);
      const same = fs.readFileSync(src).equals(fs.readFileSync(back).subarray(0, 64 * MIB));
      console.log(`read back identical: ${same ? "yes" : "NO"}`);
    }
    if (process.getuid?.() === 0 && has("nbdfuse") && has("mkfs.ext4")) await filesystemDemo(vol.export.nbdTcpUri, dir);
    else console.log("\n(run as root with nbdfuse and e2fsprogs installed to also see a mounted filesystem)");
    const after = await client.getVolume({ name: "demo" });
    step(`volume now: ${formatBytes(after.allocatedBytes)} allocated of ${formatBytes(after.sizeBytes)} (thin)`);
    if (serve) {
      console.log(`\nserving: control API ${engine.grpcAddress}, NBD ${engine.nbdAddress}; try:`);
      console.log(`  nbdinfo ${vol.export.nbdTcpUri}`);
      console.log(`  node packages/engine/dist/cli/keelson.js --address ${engine.grpcAddress} volume list`);
      console.log("Ctrl-C stops.");
      await new Promise<void>((resolve) => process.once("SIGINT", () => resolve()));
    }
  } finally {
    client.close();
    await engine.close();
    fs.rmSync(dir, { recursive: true, force: true });
  }
  step("stopped and cleaned up");
}

main().catch((error: unknown) => {
  console.error(error);
  process.exit(1);
});
