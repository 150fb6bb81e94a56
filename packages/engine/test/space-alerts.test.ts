import path from "node:path";
import { describe, expect, it } from "vitest";
import { startDaemon, type TestDaemon, tempDir } from "./helpers/daemon.js";
import { scrape } from "./helpers/metrics.js";
import { NbdTestClient } from "./helpers/nbd-client.js";

/** Waits until a scrape satisfies `ok` (the engine checks usage about once a second); returns that scrape. */
async function until(d: TestDaemon, what: string, ok: (m: Map<string, number>) => boolean): Promise<Map<string, number>> {
  const deadline = Date.now() + 20_000;
  for (;;) {
    const m = await scrape(d);
    if (ok(m)) return m;
    if (Date.now() > deadline) throw new Error(`timed out waiting for ${what}; last scrape:\n${[...m].join("\n")}`);
    await new Promise((r) => setTimeout(r, 100));
  }
}

const count = (log: string, msg: string) => log.split("\n").filter((l) => l.includes(`"msg":"${msg}"`)).length;

describe("pool space alerts", () => {
  it("usage crossing 80%, then full: each threshold is raised once per crossing (a log line and the metric), not on every write; it re-arms only below the threshold by the margin", async () => {
    using dir = tempDir("keelson-space-alerts-");
    const poolPath = path.join(dir.path, "pool.img");
    await using d = await startDaemon({
      poolPath,
      poolSize: "64M",
      dir: dir.path,
      extraArgs: ["--metrics-listen", "127.0.0.1:0"],
    });
    const c = d.client();
    const { totalBytes, extentSizeBytes } = (await c.getNode()).pool;
    const extents = totalBytes / extentSizeBytes;
    await c.createVolume({ name: "v", sizeBytes: totalBytes });
    const pool = `pool="${poolPath}"`;
    const alert = (t: number) => `keelson_pool_space_alert{${pool},threshold="${t}"}`;
    const raises = (t: number) => `keelson_pool_space_alerts_total{${pool},threshold="${t}"}`;
    let m = await scrape(d);
    expect(m.get(`keelson_pool_provisioned_bytes{${pool}}`)).toBe(totalBytes);
    expect(m.get(`keelson_pool_provision_limit_bytes{${pool}}`)).toBe(2 * totalBytes);
    expect(m.get(`keelson_pool_overcommit_ratio{${pool}}`)).toBe(1);
    expect(m.get(`keelson_pool_overcommit_limit_ratio{${pool}}`)).toBe(2);
    expect(m.get(alert(80))).toBe(0);

    // A write of a whole extent allocates one extent (a smaller one only its blocks): write extents 0..n-1.
    const nbd = await NbdTestClient.open(d.nbdAddress, "v");
    let written = 0;
    const whole = Buffer.alloc(extentSizeBytes, 1);
    const fillTo = async (n: number) => {
      for (; written < n; written++) expect((await nbd.write(written * extentSizeBytes, whole)).error).toBe(0);
      expect((await nbd.flush()).error).toBe(0);
    };
    await fillTo(Math.ceil(extents * 0.8));
    m = await until(d, "80% raised", (s) => s.get(alert(80)) === 1);
    expect([m.get(alert(90)), m.get(alert(100))]).toEqual([0, 0]);
    // More writes between 80% and 90%, checked many times over: no second alert.
    await fillTo(Math.floor(extents * 0.89));
    await until(
      d,
      "the engine to see 89%",
      (s) => (s.get(`keelson_pool_used_ratio{${pool}}`) ?? 0) >= Math.floor(extents * 0.89) / extents,
    );
    // Trimmed back to just under 80%: above the re-arm point (75%), so still raised.
    const trimTo = async (n: number) => {
      for (; written > n; written--) expect((await nbd.trim((written - 1) * extentSizeBytes, extentSizeBytes)).error).toBe(0);
      expect((await nbd.flush()).error).toBe(0);
    };
    await trimTo(Math.ceil(extents * 0.78));
    await until(d, "the engine to see 78%", (s) => (s.get(`keelson_pool_used_ratio{${pool}}`) ?? 1) <= written / extents);
    expect((await scrape(d)).get(alert(80))).toBe(1);
    await fillTo(Math.floor(extents * 0.89));
    await trimTo(Math.floor(extents * 0.7));
    m = await until(d, "80% cleared", (s) => s.get(alert(80)) === 0);
    expect(m.get(raises(80))).toBe(1);
    expect(count(d.log(), "pool 80% used: raised")).toBe(1);
    expect(count(d.log(), "pool 80% used: cleared")).toBe(1);

    // Full: every threshold passed is raised once more or for the first time.
    await fillTo(extents);
    expect((await nbd.write(extents * extentSizeBytes - 4096, Buffer.alloc(4096, 2))).error).toBe(0);
    m = await until(d, "full raised", (s) => s.get(alert(100)) === 1);
    expect([m.get(raises(80)), m.get(raises(90)), m.get(raises(100))]).toEqual([2, 1, 1]);
    expect(count(d.log(), "pool full: raised")).toBe(1);
    await nbd.disconnect();
  }, 120_000);
});
