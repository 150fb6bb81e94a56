import type { Registry } from "prom-client";
import type { QosManager } from "../qos/qos-manager.js";
import type { IoCounters, LatencyHistogram } from "../store/io-counters.js";
import type { Pool } from "../store/pool.js";
import type { Volume } from "../store/volume.js";
import { CollectedHistogram } from "./collected-histogram.js";
import { counter, gauge, type Sample } from "./families.js";

type VolumeLabel = "volume";

/** A per-volume family's samples now: one per volume of the pool. */
function perVolume(pool: Pool, value: (v: Volume) => number): () => Array<Sample<VolumeLabel>> {
  return () => pool.listVolumes().map((v) => [{ volume: v.name }, value(v)]);
}

/**
 * Per volume of the pool: its size and allocation, what clients asked of it
 * through its exports (requests as they arrived, not their outcome; read
 * from the volume's IoCounters, which the request path keeps as plain
 * numbers), and what QoS did to its I/O.
 */
export function registerVolumeMetrics(registry: Registry, pool: Pool, qos: QosManager): void {
  const volumeGauge = (name: string, help: string, value: (v: Volume) => number) =>
    gauge(registry, { name, help, labelNames: ["volume"], read: perVolume(pool, value) });
  const volumeCounter = (name: string, help: string, value: (v: Volume) => number) =>
    counter(registry, { name, help, labelNames: ["volume"], read: perVolume(pool, value) });

  volumeGauge("keelson_volume_size_bytes", "Volume size.", (v) => v.sizeBytes);
  volumeGauge("keelson_volume_allocated_bytes", "Pool bytes held by the volume's writable layer.", (v) =>
    pool.layerBytes(v.head),
  );
  registerRequestMetrics(registry, pool);
  volumeCounter(
    "keelson_volume_qos_throttled_seconds_total",
    "Time during which I/O of the volume waited on its limits.",
    (v) => qos.status(v.record.uid).throttledMs / 1000,
  );
  volumeCounter(
    "keelson_volume_qos_delayed_ios_total",
    "I/Os of the volume that waited on a limit.",
    (v) => qos.status(v.record.uid).delayedIos,
  );
  volumeCounter(
    "keelson_volume_qos_reserved_ios_total",
    "I/Os the disk scheduler started to meet the volume's reservation.",
    (v) => qos.status(v.record.uid).servedByReservation,
  );
  volumeGauge("keelson_volume_qos_reservation_iops", "The volume's reserved IOPS.", (v) => v.record.qos?.reservationIops ?? 0);
}

/** The request counters and latency histograms of each volume's exports. */
function registerRequestMetrics(registry: Registry, pool: Pool): void {
  new CollectedHistogram<"volume" | "op">({
    name: "keelson_volume_request_duration_seconds",
    help: "Time from an NBD request's arrival (a write's once its payload is in) to its completion, by kind.",
    registry,
    read: () => pool.listVolumes().flatMap((v) => requestLatencies(v.name, v.io)),
  });
  gauge(registry, {
    name: "keelson_volume_requests_in_flight",
    help: "Reads, writes, zeroes and flushes of the volume started and not completed.",
    labelNames: ["volume"],
    read: perVolume(pool, (v) => v.io.inFlight),
  });
  const requests = (name: string, help: string, value: (v: Volume) => number) =>
    counter(registry, { name, help, labelNames: ["volume"], read: perVolume(pool, value) });
  requests("keelson_volume_read_requests_total", "NBD READ requests of the volume.", (v) => v.io.readOps);
  requests("keelson_volume_read_bytes_total", "Bytes NBD READ requests of the volume asked for.", (v) => v.io.readBytes);
  requests("keelson_volume_write_requests_total", "NBD WRITE requests of the volume.", (v) => v.io.writeOps);
  requests("keelson_volume_write_bytes_total", "Payload bytes of NBD WRITE requests of the volume.", (v) => v.io.writeBytes);
  requests("keelson_volume_zero_requests_total", "NBD WRITE_ZEROES and TRIM requests of the volume.", (v) => v.io.zeroOps);
  requests("keelson_volume_flush_requests_total", "NBD FLUSH requests on the volume's exports.", (v) => v.io.flushOps);
  requests(
    "keelson_volume_block_status_requests_total",
    "NBD BLOCK_STATUS queries of the volume (answered from metadata).",
    (v) => v.io.blockStatusOps,
  );
}

/** The latency histograms by request kind of `io`, the counters of the volume `volume`, labelled as the exposition shows them. */
export function requestLatencies(
  volume: string,
  io: IoCounters,
): Array<readonly [{ volume: string; op: string }, LatencyHistogram]> {
  return [
    [{ volume, op: "read" }, io.readLatency],
    [{ volume, op: "write" }, io.writeLatency],
    [{ volume, op: "zero" }, io.zeroLatency],
    [{ volume, op: "flush" }, io.flushLatency],
  ];
}
