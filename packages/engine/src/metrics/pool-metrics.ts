import type { Registry } from "prom-client";
import { deviceIo, ioEngineReport } from "../device-io/select.js";
import type { QosManager } from "../qos/qos-manager.js";
import type { Pool } from "../store/pool.js";
import type { SpaceAlarm } from "../store/space-alarm.js";
import { counter, gauge } from "./families.js";

/** What the NBD server holds for request payloads and replies (its byte budget). */
export interface NbdBufferState {
  readonly bufferedBytes: number;
  readonly bufferLimitBytes: number;
}

/** The NBD server's byte budget: what it holds now, and its limit. */
export function registerNbdMetrics(registry: Registry, nbd: NbdBufferState): void {
  gauge(registry, {
    name: "keelson_nbd_buffered_bytes",
    help: "Bytes of NBD request payloads and reply buffers held now, all connections (application and replica) together.",
    labelNames: [],
    read: () => [[{}, nbd.bufferedBytes]],
  });
  gauge(registry, {
    name: "keelson_nbd_buffer_limit_bytes",
    help: "The NBD byte budget of application and, apart, of replica connections: past it requests wait.",
    labelNames: [],
    read: () => [[{}, nbd.bufferLimitBytes]],
  });
}

/** The disk I/O engine in use and what it has in flight. */
export function registerIoEngineMetrics(registry: Registry): void {
  gauge(registry, {
    name: "keelson_io_engine_info",
    help: "The disk I/O engine in use (1): io_uring, or the thread pool with the reason in `note`.",
    labelNames: ["engine", "note"],
    read: () => {
      const io = ioEngineReport();
      return [[{ engine: io.engine, note: io.note }, 1]];
    },
  });
  gauge(registry, {
    name: "keelson_io_requests_in_flight",
    help: "Disk reads, writes and flushes handed to the I/O engine and not completed.",
    labelNames: ["engine"],
    read: () => [[{ engine: ioEngineReport().engine }, deviceIo().inFlight]],
  });
}

/** Pool space, thin provisioning and space alerts: what is used and promised against the limit, which thresholds are raised. */
export function registerPoolMetrics(registry: Registry, pool: Pool, alarm: SpaceAlarm): void {
  const disk = () => ({ pool: pool.device.path });
  const ratio = (bytes: number, totalBytes: number) => (totalBytes > 0 ? bytes / totalBytes : 0);
  gauge(registry, {
    name: "keelson_pool_bytes",
    help: "Pool space by state.",
    labelNames: ["pool", "state"],
    read: () => {
      const space = pool.space();
      return [
        [{ ...disk(), state: "total" }, space.totalBytes],
        [{ ...disk(), state: "allocated" }, space.allocatedBytes],
        [{ ...disk(), state: "free" }, space.freeBytes],
      ];
    },
  });
  const perPool = (name: string, help: string, value: () => number) =>
    gauge(registry, { name, help, labelNames: ["pool"], read: () => [[disk(), value()]] });
  perPool(
    "keelson_pool_provisioned_bytes",
    "Sum of the sizes of the pool's volumes (what thin volumes may grow to).",
    () => pool.provisioning().provisionedBytes,
  );
  perPool(
    "keelson_pool_provision_limit_bytes",
    "Most the pool's volumes may promise: its data capacity times the over-commit limit.",
    () => pool.provisioning().limitBytes,
  );
  perPool(
    "keelson_pool_overcommit_ratio",
    "Provisioned bytes over the pool's data capacity (1 = fully provisioned, 2 = promised twice over).",
    () => ratio(pool.provisioning().provisionedBytes, pool.space().totalBytes),
  );
  perPool(
    "keelson_pool_overcommit_limit_ratio",
    "The over-commit limit (keelsond --overcommit-percent / 100).",
    () => pool.provisioning().overcommitPercent / 100,
  );
  perPool("keelson_pool_used_ratio", "Allocated bytes over the pool's data capacity.", () => {
    const space = pool.space();
    return ratio(space.allocatedBytes, space.totalBytes);
  });
  const perThreshold = (value: (t: number) => number) => () =>
    alarm.thresholds.map((t) => [{ ...disk(), threshold: String(t) }, value(t)] as const);
  gauge(registry, {
    name: "keelson_pool_space_alert",
    help: "1 while the used-space threshold (percent; 100 = full) is raised, 0 once cleared (re-armed 5 points below it).",
    labelNames: ["pool", "threshold"],
    read: perThreshold((t) => (alarm.isRaised(t) ? 1 : 0)),
  });
  counter(registry, {
    name: "keelson_pool_space_alerts_total",
    help: "Times the used-space threshold was raised since the engine started.",
    labelNames: ["pool", "threshold"],
    read: perThreshold((t) => alarm.raises(t)),
  });
}

/** The disk's capability against its reservations, and what waits in its scheduler. */
export function registerDiskMetrics(registry: Registry, pool: Pool, qos: QosManager): void {
  const perDisk = (name: string, help: string, value: () => number) =>
    gauge(registry, { name, help, labelNames: ["pool"], read: () => [[{ pool: pool.device.path }, value()]] });
  perDisk("keelson_disk_capability_iops", "IOPS the disk can serve (calibrated or set).", () => pool.disk?.iops ?? 0);
  perDisk(
    "keelson_disk_capability_bytes_per_second",
    "Bytes per second the disk can serve (calibrated or set).",
    () => pool.disk?.bytesPerSec ?? 0,
  );
  perDisk("keelson_disk_reserved_iops", "IOPS reserved by volumes on the disk.", () => pool.reserved().iops);
  perDisk(
    "keelson_disk_reserved_bytes_per_second",
    "Bytes per second reserved by volumes on the disk.",
    () => pool.reserved().bytesPerSec,
  );
  perDisk("keelson_disk_queued_ios", "I/Os waiting in the disk scheduler.", () => qos.scheduler.queued);
  perDisk(
    "keelson_front_waiting_requests",
    "NBD requests waiting for their turn at the front scheduler (this daemon's CPU).",
    () => qos.front.queued,
  );
  perDisk(
    "keelson_front_allowance_requests",
    "NBD requests the front scheduler lets start per event-loop turn now (shrinks while a reservation falls short).",
    () => qos.front.allowance,
  );
  counter(registry, {
    name: "keelson_front_started_requests_total",
    help: "NBD requests the engaged front scheduler started, for a volume's reservation or by share.",
    labelNames: ["pool", "by"],
    read: () => [
      [{ pool: pool.device.path, by: "reservation" }, qos.front.startedByReservation],
      [{ pool: pool.device.path, by: "share" }, qos.front.startedByShare],
    ],
  });
}
