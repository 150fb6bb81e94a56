import http from "node:http";
import { deviceIo, ioEngineReport } from "../device-io/select.js";
import type { QosManager } from "../qos/qos-manager.js";
import { LATENCY_BUCKETS_S, type LatencyHistogram } from "../store/io-counters.js";
import type { Pool } from "../store/pool.js";
import type { SpaceAlarm } from "../store/space-alarm.js";
import type { Volume } from "../store/volume.js";

// Prometheus text exposition (format 0.0.4) of what the engine knows: pool
// space, thin provisioning and space alerts, the disk's capability against its reservations, and per volume its
// allocation and what QoS did to its I/O. Rendered on each scrape from live
// state; nothing is kept per request.

type Labels = Record<string, string>;

interface Family {
  name: string;
  help: string;
  type: "gauge" | "counter" | "histogram";
  /** Labels, value, and for a histogram the sample's suffix (`_bucket`, `_sum`, `_count`). */
  samples: Array<[Labels, number] | [Labels, number, string]>;
}

function escapeLabel(v: string): string {
  return v.replace(/\\/g, "\\\\").replace(/\n/g, "\\n").replace(/"/g, '\\"');
}

function render(families: Family[]): string {
  const lines: string[] = [];
  for (const f of families) {
    lines.push(`# HELP ${f.name} ${f.help}`, `# TYPE ${f.name} ${f.type}`);
    for (const [labels, value, suffix] of f.samples) {
      const l = Object.entries(labels)
        .map(([k, v]) => `${k}="${escapeLabel(v)}"`)
        .join(",");
      const shown = Number.isFinite(value) ? value : value === Number.POSITIVE_INFINITY ? "+Inf" : 0;
      lines.push(`${f.name}${suffix ?? ""}${l ? `{${l}}` : ""} ${shown}`);
    }
  }
  return `${lines.join("\n")}\n`;
}

/** Thin provisioning and space alerts of the pool: what is promised against the limit, which thresholds are raised. */
function provisioningFamilies(pool: Pool, alarm: SpaceAlarm): Family[] {
  const disk = { pool: pool.device.path };
  const space = pool.space();
  const p = pool.provisioning();
  const perThreshold = (fn: (t: number) => number): Array<[Labels, number]> =>
    alarm.thresholds.map((t) => [{ ...disk, threshold: String(t) }, fn(t)]);
  return [
    {
      name: "keelson_pool_provisioned_bytes",
      help: "Sum of the sizes of the pool's volumes (what thin volumes may grow to).",
      type: "gauge",
      samples: [[disk, p.provisionedBytes]],
    },
    {
      name: "keelson_pool_provision_limit_bytes",
      help: "Most the pool's volumes may promise: its data capacity times the over-commit limit.",
      type: "gauge",
      samples: [[disk, p.limitBytes]],
    },
    {
      name: "keelson_pool_overcommit_ratio",
      help: "Provisioned bytes over the pool's data capacity (1 = fully provisioned, 2 = promised twice over).",
      type: "gauge",
      samples: [[disk, space.totalBytes > 0 ? p.provisionedBytes / space.totalBytes : 0]],
    },
    {
      name: "keelson_pool_overcommit_limit_ratio",
      help: "The over-commit limit (keelsond --overcommit-percent / 100).",
      type: "gauge",
      samples: [[disk, p.overcommitPercent / 100]],
    },
    {
      name: "keelson_pool_used_ratio",
      help: "Allocated bytes over the pool's data capacity.",
      type: "gauge",
      samples: [[disk, space.totalBytes > 0 ? space.allocatedBytes / space.totalBytes : 0]],
    },
    {
      name: "keelson_pool_space_alert",
      help: "1 while the used-space threshold (percent; 100 = full) is raised, 0 once cleared (re-armed 5 points below it).",
      type: "gauge",
      samples: perThreshold((t) => (alarm.isRaised(t) ? 1 : 0)),
    },
    {
      name: "keelson_pool_space_alerts_total",
      help: "Times the used-space threshold was raised since the engine started.",
      type: "counter",
      samples: perThreshold((t) => alarm.raises(t)),
    },
  ];
}

/** What the NBD server holds for request payloads and replies (its byte budget). */
export interface NbdBufferState {
  readonly bufferedBytes: number;
  readonly bufferLimitBytes: number;
}

function nbdFamilies(nbd: NbdBufferState): Family[] {
  return [
    {
      name: "keelson_nbd_buffered_bytes",
      help: "Bytes of NBD request payloads and reply buffers held now, all connections (application and replica) together.",
      type: "gauge",
      samples: [[{}, nbd.bufferedBytes]],
    },
    {
      name: "keelson_nbd_buffer_limit_bytes",
      help: "The NBD byte budget of application and, apart, of replica connections: past it requests wait.",
      type: "gauge",
      samples: [[{}, nbd.bufferLimitBytes]],
    },
  ];
}

/** A histogram's samples in the exposition's shape: cumulative buckets with `le`, then sum and count. */
function histogramSamples(labels: Labels, h: LatencyHistogram): Array<[Labels, number, string]> {
  const out: Array<[Labels, number, string]> = [];
  let cumulative = 0;
  LATENCY_BUCKETS_S.forEach((le, i) => {
    cumulative += h.counts[i] as number;
    out.push([{ ...labels, le: String(le) }, cumulative, "_bucket"]);
  });
  out.push([{ ...labels, le: "+Inf" }, h.count, "_bucket"], [labels, h.sumSeconds, "_sum"], [labels, h.count, "_count"]);
  return out;
}

/** What clients asked of each volume through its exports (requests as they arrived, not their outcome). */
function volumeIoFamilies(volumes: Volume[]): Family[] {
  const counter = (name: string, help: string, fn: (v: Volume) => number): Family => ({
    name,
    help,
    type: "counter",
    samples: volumes.map((v) => [{ volume: v.name }, fn(v)]),
  });
  const latency: Array<[Labels, number] | [Labels, number, string]> = [];
  for (const v of volumes) {
    const kinds: Array<[string, LatencyHistogram]> = [
      ["read", v.io.readLatency],
      ["write", v.io.writeLatency],
      ["zero", v.io.zeroLatency],
      ["flush", v.io.flushLatency],
    ];
    for (const [op, h] of kinds) latency.push(...histogramSamples({ volume: v.name, op }, h));
  }
  return [
    {
      name: "keelson_volume_request_duration_seconds",
      help: "Time from an NBD request's arrival (a write's once its payload is in) to its completion, by kind.",
      type: "histogram",
      samples: latency,
    },
    {
      name: "keelson_volume_requests_in_flight",
      help: "Reads, writes, zeroes and flushes of the volume started and not completed.",
      type: "gauge",
      samples: volumes.map((v) => [{ volume: v.name }, v.io.inFlight]),
    },
    counter("keelson_volume_read_requests_total", "NBD READ requests of the volume.", (v) => v.io.readOps),
    counter("keelson_volume_read_bytes_total", "Bytes NBD READ requests of the volume asked for.", (v) => v.io.readBytes),
    counter("keelson_volume_write_requests_total", "NBD WRITE requests of the volume.", (v) => v.io.writeOps),
    counter("keelson_volume_write_bytes_total", "Payload bytes of NBD WRITE requests of the volume.", (v) => v.io.writeBytes),
    counter("keelson_volume_zero_requests_total", "NBD WRITE_ZEROES and TRIM requests of the volume.", (v) => v.io.zeroOps),
    counter("keelson_volume_flush_requests_total", "NBD FLUSH requests on the volume's exports.", (v) => v.io.flushOps),
    counter(
      "keelson_volume_block_status_requests_total",
      "NBD BLOCK_STATUS queries of the volume (answered from metadata).",
      (v) => v.io.blockStatusOps,
    ),
  ];
}

/** The metric families of one engine, now. */
export function collectMetrics(pool: Pool, qos: QosManager, alarm: SpaceAlarm, nbd?: NbdBufferState): string {
  const disk = { pool: pool.device.path };
  const space = pool.space();
  const reserved = pool.reserved();
  const volumes = pool.listVolumes();
  const perVolume = (fn: (uid: string) => number): Array<[Labels, number]> =>
    volumes.map((v) => [{ volume: v.name }, fn(v.record.uid)]);
  const io = ioEngineReport();
  return render([
    ...(nbd ? nbdFamilies(nbd) : []),
    {
      name: "keelson_io_engine_info",
      help: "The disk I/O engine in use (1): io_uring, or the thread pool with the reason in `note`.",
      type: "gauge",
      samples: [[{ engine: io.engine, note: io.note }, 1]],
    },
    {
      name: "keelson_io_requests_in_flight",
      help: "Disk reads, writes and flushes handed to the I/O engine and not completed.",
      type: "gauge",
      samples: [[{ engine: io.engine }, deviceIo().inFlight]],
    },
    {
      name: "keelson_pool_bytes",
      help: "Pool space by state.",
      type: "gauge",
      samples: [
        [{ ...disk, state: "total" }, space.totalBytes],
        [{ ...disk, state: "allocated" }, space.allocatedBytes],
        [{ ...disk, state: "free" }, space.freeBytes],
      ],
    },
    ...provisioningFamilies(pool, alarm),
    {
      name: "keelson_disk_capability_iops",
      help: "IOPS the disk can serve (calibrated or set).",
      type: "gauge",
      samples: [[disk, pool.disk?.iops ?? 0]],
    },
    {
      name: "keelson_disk_capability_bytes_per_second",
      help: "Bytes per second the disk can serve (calibrated or set).",
      type: "gauge",
      samples: [[disk, pool.disk?.bytesPerSec ?? 0]],
    },
    {
      name: "keelson_disk_reserved_iops",
      help: "IOPS reserved by volumes on the disk.",
      type: "gauge",
      samples: [[disk, reserved.iops]],
    },
    {
      name: "keelson_disk_reserved_bytes_per_second",
      help: "Bytes per second reserved by volumes on the disk.",
      type: "gauge",
      samples: [[disk, reserved.bytesPerSec]],
    },
    {
      name: "keelson_disk_queued_ios",
      help: "I/Os waiting in the disk scheduler.",
      type: "gauge",
      samples: [[disk, qos.scheduler.queued]],
    },
    {
      name: "keelson_volume_size_bytes",
      help: "Volume size.",
      type: "gauge",
      samples: volumes.map((v) => [{ volume: v.name }, v.sizeBytes]),
    },
    {
      name: "keelson_volume_allocated_bytes",
      help: "Pool bytes held by the volume's writable layer.",
      type: "gauge",
      samples: volumes.map((v) => [{ volume: v.name }, pool.layerBytes(v.head)]),
    },
    ...volumeIoFamilies(volumes),
    {
      name: "keelson_volume_qos_throttled_seconds_total",
      help: "Time during which I/O of the volume waited on its limits.",
      type: "counter",
      samples: perVolume((uid) => qos.status(uid).throttledMs / 1000),
    },
    {
      name: "keelson_volume_qos_delayed_ios_total",
      help: "I/Os of the volume that waited on a limit.",
      type: "counter",
      samples: perVolume((uid) => qos.status(uid).delayedIos),
    },
    {
      name: "keelson_volume_qos_reserved_ios_total",
      help: "I/Os the disk scheduler started to meet the volume's reservation.",
      type: "counter",
      samples: perVolume((uid) => qos.status(uid).servedByReservation),
    },
    {
      name: "keelson_volume_qos_reservation_iops",
      help: "The volume's reserved IOPS.",
      type: "gauge",
      samples: volumes.map((v) => [{ volume: v.name }, v.record.qos?.reservationIops ?? 0]),
    },
  ]);
}

/** Serves GET /metrics on `address` (`host:port`); resolves with the bound address. */
export function serveMetrics(address: string, render: () => string): Promise<{ address: string; close(): Promise<void> }> {
  const at = address.lastIndexOf(":");
  const server = http.createServer((req, res) => {
    if (req.method !== "GET" || (req.url ?? "").split("?")[0] !== "/metrics") {
      res.writeHead(404, { "content-type": "text/plain" }).end("only GET /metrics is served\n");
      return;
    }
    res.writeHead(200, { "content-type": "text/plain; version=0.0.4" }).end(render());
  });
  return new Promise((resolve, reject) => {
    server.once("error", reject);
    server.listen(Number(address.slice(at + 1)), address.slice(0, at), () => {
      const bound = server.address();
      const port = typeof bound === "object" && bound ? bound.port : 0;
      resolve({
        address: `${address.slice(0, at)}:${port}`,
        close: () => new Promise<void>((r) => server.close(() => r())),
      });
    });
  });
}
