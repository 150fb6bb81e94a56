import fs from "node:fs";
import path from "node:path";
import { describe, expect, it } from "vitest";
import { Cleanup } from "./helpers/cleanup.js";
import { startDaemon, type TestDaemon, tempDir } from "./helpers/daemon.js";
import { canRun } from "./helpers/env.js";
import { NbdTestClient } from "./helpers/nbd-client.js";
import { mountSmallTmpfs } from "./helpers/small-fs.js";

const MIB = 1024 * 1024;
const KIB = 1024;
const ENOSPC = 28;
/** Each test write covers this much (several 4 KiB blocks, one stamp). */
const WRITE_BYTES = 256 * KIB;
/** A FLUSH after every this many writes. */
const WRITES_PER_FLUSH = 8;
/** The host filesystem: smaller than the sparse pool on it, so the host fills first. */
const HOST_FS_BYTES = 48 * MIB;
const POOL_SIZE = "256M";
/** Space the test holds back in a file of its own and gives back later, as an operator would. */
const RESERVE_BYTES = 8 * MIB;
/** Overwrite + FLUSH rounds on the full filesystem: enough journal batches to cross into pages never written before. */
const FULL_FLUSH_ROUNDS = 48;

/** A buffer of `bytes` whose every 8-byte slot holds `id`, so stale or torn data shows. */
function stamped(id: number, bytes: number): Buffer {
  const b = Buffer.alloc(bytes);
  for (let at = 0; at < bytes; at += 8) b.writeBigUInt64BE(BigInt(id), at);
  return b;
}

/** Reads every acknowledged write back and expects its bytes exactly. */
async function expectAcked(d: TestDaemon, volume: string, acked: ReadonlyMap<number, number>): Promise<void> {
  const reader = await NbdTestClient.open(d.nbdAddress, volume);
  try {
    for (const [offset, id] of acked) {
      const r = await reader.read(offset, WRITE_BYTES);
      expect(r.error, `read at ${offset}`).toBe(0);
      expect(r.data.equals(stamped(id, WRITE_BYTES)), `data at ${offset} is write ${id}`).toBe(true);
    }
  } finally {
    await reader.disconnect();
  }
}

describe("host filesystem full under a file-backed pool", () => {
  it("host ENOSPC: writes fail ENOSPC, no acknowledged write lost, FLUSH and reads keep working, writes work again once space is freed, kill -9 while full reopens intact", async (t) => {
    if (!canRun({ root: true, tools: ["mount", "umount"] }, t.task.name)) return t.skip();
    using dir = tempDir("keelson-host-enospc-");
    await using cleanup = new Cleanup();
    const small = await mountSmallTmpfs(dir.path, HOST_FS_BYTES, cleanup);
    const poolPath = path.join(small.dir, "pool.img");
    // The operator's disk figures spare a new pool the calibration, which writes 64 MiB of scratch on free extents.
    let d = await startDaemon({ poolPath, poolSize: POOL_SIZE, dir: dir.path, extraArgs: ["--disk-capability", "50000:1G"] });
    cleanup.add("stop keelsond", () => d.stop());
    await d.client().createVolume({ name: "full", sizeBytes: 200 * MIB });
    fs.writeFileSync(path.join(small.dir, "reserve"), Buffer.alloc(RESERVE_BYTES, 0xee));

    // 1. Write until the host filesystem is full; every write before the last acknowledged FLUSH must survive.
    const client = await NbdTestClient.open(d.nbdAddress, "full");
    const acked = new Map<number, number>();
    let id = 0;
    let offset = 0;
    let failure = 0;
    while (offset + WRITE_BYTES <= client.sizeBytes) {
      const r = await client.write(offset, stamped(++id, WRITE_BYTES));
      if (r.error !== 0) {
        failure = r.error;
        break;
      }
      acked.set(offset, id);
      offset += WRITE_BYTES;
      if (acked.size % WRITES_PER_FLUSH === 0) expect((await client.flush()).error).toBe(0);
    }
    const firstFailedOffset = offset;
    console.log(
      `host ENOSPC: ${acked.size} writes of ${WRITE_BYTES / KIB} KiB acknowledged (${(acked.size * WRITE_BYTES) / MIB} MiB) before the first failure, errno ${failure}`,
    );
    expect(failure, "a write on a full host filesystem fails with ENOSPC").toBe(ENOSPC);
    expect(acked.size).toBeGreaterThan(16);
    // Whatever the failed write left is taken too, so the filesystem is full to the last page.
    small.fill("tail");

    // 2. The pool is healthy: overwrites of allocated extents and FLUSHes succeed, new extents fail ENOSPC.
    const offsets = [...acked.keys()];
    for (let round = 0; round < FULL_FLUSH_ROUNDS; round++) {
      const at = offsets[(round * 7) % offsets.length] as number;
      const w = await client.write(at, stamped(++id, WRITE_BYTES));
      expect(w.error, `overwrite at ${at} on the full filesystem`).toBe(0);
      acked.set(at, id);
      expect((await client.flush()).error, `FLUSH ${round} on the full filesystem`).toBe(0);
    }
    expect((await client.write(firstFailedOffset, stamped(++id, WRITE_BYTES))).error).toBe(ENOSPC);
    expect((await client.flush()).error).toBe(0);
    // TRIM frees pool extents without punching holes in the pool file (node has no fallocate), so a
    // trimmed extent keeps its host space and a new write that reuses it succeeds on the full filesystem.
    expect((await client.trim(0, MIB)).error).toBe(0);
    expect((await client.flush()).error).toBe(0);
    for (let at = 0; at < MIB; at += WRITE_BYTES) acked.delete(at);
    // A logical extent nothing was written to, so the write takes a new pool extent (the trimmed one,
    // freed last). The failed write's own extent is allocated in the pool but partly a hole on the host.
    const fresh = Math.ceil((firstFailedOffset + 1) / MIB) * MIB;
    const reuse = await client.write(fresh, stamped(++id, WRITE_BYTES));
    expect(reuse.error, "a write into a trimmed extent's host space on the full filesystem").toBe(0);
    acked.set(fresh, id);
    expect((await client.flush()).error).toBe(0);
    expect(d.child.exitCode).toBe(null);
    await expectAcked(d, "full", acked);
    client.close();

    // 3. kill -9 while the host is still full: the pool opens again with every flushed write. So does a clean
    // stop (its checkpoint goes to a preallocated slot), with the page its lock file gave back taken too.
    await d.kill9();
    d = await startDaemon({ poolPath, dir: dir.path });
    await expectAcked(d, "full", acked);
    await d.stop();
    small.fill("after-stop");
    d = await startDaemon({ poolPath, dir: dir.path });
    await expectAcked(d, "full", acked);

    // 4. Space comes back (the operator deletes a file): the same writes succeed without a restart.
    small.free("reserve");
    const again = await NbdTestClient.open(d.nbdAddress, "full");
    for (let at = firstFailedOffset; at < firstFailedOffset + RESERVE_BYTES / 2; at += WRITE_BYTES) {
      const r = await again.write(at, stamped(++id, WRITE_BYTES));
      expect(r.error, `write at ${at} after space was freed`).toBe(0);
      acked.set(at, id);
    }
    expect((await again.flush()).error).toBe(0);
    await again.disconnect();
    await expectAcked(d, "full", acked);

    // 5. kill -9 and a clean restart both keep everything.
    await d.kill9();
    d = await startDaemon({ poolPath, dir: dir.path });
    await expectAcked(d, "full", acked);
    await d.stop();
    d = await startDaemon({ poolPath, dir: dir.path });
    await expectAcked(d, "full", acked);
  });

  it("new pool on a nearly full host filesystem: the disk calibration leaves the host space, keelsond starts and serves", async (t) => {
    if (!canRun({ root: true, tools: ["mount", "umount"] }, t.task.name)) return t.skip();
    using dir = tempDir("keelson-host-enospc-calibrate-");
    await using cleanup = new Cleanup();
    // Room for the metadata area of a 256M pool (15 MiB) but less than the 64 MiB a calibration writes over.
    const small = await mountSmallTmpfs(dir.path, 40 * MIB, cleanup);
    const poolPath = path.join(small.dir, "pool.img");
    const d = await startDaemon({ poolPath, poolSize: POOL_SIZE, dir: dir.path });
    cleanup.add("stop keelsond", () => d.stop());
    const freeAfterStart = small.availableBytes();
    console.log(`calibration on a 40 MiB host filesystem: ${(freeAfterStart / MIB).toFixed(1)} MiB left free after start`);
    expect(freeAfterStart).toBeGreaterThan(8 * MIB);
    expect(d.log()).toContain("disk calibrated");
    await d.client().createVolume({ name: "v", sizeBytes: 64 * MIB });
    const client = await NbdTestClient.open(d.nbdAddress, "v");
    expect((await client.write(0, stamped(1, WRITE_BYTES))).error).toBe(0);
    expect((await client.flush()).error).toBe(0);
    expect((await client.read(0, WRITE_BYTES)).data.equals(stamped(1, WRITE_BYTES))).toBe(true);
    await client.disconnect();
  });

  it("new pool on a host filesystem without room for its metadata area: keelsond fails NO_SPACE, and starts once the filesystem grows", async (t) => {
    if (!canRun({ root: true, tools: ["mount", "umount"] }, t.task.name)) return t.skip();
    using dir = tempDir("keelson-host-enospc-metadata-");
    await using cleanup = new Cleanup();
    // A 256M pool's metadata area is 15 MiB.
    const small = await mountSmallTmpfs(dir.path, 8 * MIB, cleanup);
    const poolPath = path.join(small.dir, "pool.img");
    const options = { poolPath, poolSize: POOL_SIZE, dir: dir.path, extraArgs: ["--disk-capability", "50000:1G"] };
    const refused = await startDaemon(options).then(
      async (d) => {
        await d.stop();
        return "started";
      },
      (error: unknown) => String(error),
    );
    expect(refused).toContain('"code":"NO_SPACE"');
    expect(refused).toContain("no room for the pool's");
    await small.resize(40 * MIB);
    const d = await startDaemon(options);
    cleanup.add("stop keelsond", () => d.stop());
    await d.client().createVolume({ name: "v", sizeBytes: 16 * MIB });
    const client = await NbdTestClient.open(d.nbdAddress, "v");
    expect((await client.write(0, stamped(7, WRITE_BYTES))).error).toBe(0);
    expect((await client.flush()).error).toBe(0);
    expect((await client.read(0, WRITE_BYTES)).data.equals(stamped(7, WRITE_BYTES))).toBe(true);
    await client.disconnect();
  });
});
