import path from "node:path";
import { describe, expect, it } from "vitest";
import { startDaemon, tempDir } from "./helpers/daemon.js";
import { scrape } from "./helpers/metrics.js";
import { NbdTestClient } from "./helpers/nbd-client.js";

const MIB = 1024 * 1024;

describe("per-volume request metrics", () => {
  it("counts each volume's requests and bytes, times them into histograms by kind, and shows nothing in flight once all are answered", async () => {
    using dir = tempDir("keelson-vmetrics-");
    await using d = await startDaemon({
      poolPath: path.join(dir.path, "pool.img"),
      poolSize: "256M",
      dir: dir.path,
      extraArgs: ["--metrics-listen", "127.0.0.1:0"],
    });
    await d.client().createVolume({ name: "a", sizeBytes: 16 * MIB });
    await d.client().createVolume({ name: "b", sizeBytes: 16 * MIB });
    const a = await NbdTestClient.open(d.nbdSocket, "a");
    const data = Buffer.alloc(64 * 1024, 7);
    await Promise.all(Array.from({ length: 10 }, (_, i) => a.write(i * data.length, data)));
    const reads = await Promise.all(Array.from({ length: 5 }, (_, i) => a.read(i * data.length, data.length)));
    for (const r of reads) expect(r.data.equals(data)).toBe(true);
    expect((await a.flush()).error).toBe(0);
    expect((await a.trim(0, 4096)).error).toBe(0);
    await a.disconnect();

    const m = await scrape(d);
    const get = (name: string) => m.get(name) ?? Number.NaN;
    expect(get('keelson_volume_write_requests_total{volume="a"}')).toBe(10);
    expect(get('keelson_volume_write_bytes_total{volume="a"}')).toBe(10 * data.length);
    expect(get('keelson_volume_read_requests_total{volume="a"}')).toBe(5);
    expect(get('keelson_volume_read_bytes_total{volume="a"}')).toBe(5 * data.length);
    expect(get('keelson_volume_flush_requests_total{volume="a"}')).toBe(1);
    expect(get('keelson_volume_zero_requests_total{volume="a"}')).toBe(1);
    expect(get('keelson_volume_read_requests_total{volume="b"}')).toBe(0);
    expect(get('keelson_volume_block_status_requests_total{volume="a"}')).toBe(0);
    expect(get('keelson_volume_requests_in_flight{volume="a"}')).toBe(0);
    for (const [op, n] of [
      ["read", 5],
      ["write", 10],
      ["flush", 1],
      ["zero", 1],
    ] as const) {
      expect(get(`keelson_volume_request_duration_seconds_count{volume="a",op="${op}"}`), op).toBe(n);
      expect(get(`keelson_volume_request_duration_seconds_bucket{volume="a",op="${op}",le="+Inf"}`), op).toBe(n);
      expect(get(`keelson_volume_request_duration_seconds_sum{volume="a",op="${op}"}`), op).toBeGreaterThan(0);
      // Buckets are cumulative: never decreasing with the bound.
      const buckets = [...m.entries()]
        .filter(([k]) => k.startsWith(`keelson_volume_request_duration_seconds_bucket{volume="a",op="${op}",`))
        .map(([, v]) => v);
      expect(buckets).toEqual([...buckets].sort((x, y) => x - y));
    }
    expect(get('keelson_volume_request_duration_seconds_count{volume="b",op="read"}')).toBe(0);
  });
});
