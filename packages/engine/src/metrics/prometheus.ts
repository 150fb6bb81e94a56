import http from "node:http";
import { Registry } from "prom-client";
import type { QosManager } from "../qos/qos-manager.js";
import type { Pool } from "../store/pool.js";
import type { SpaceAlarm } from "../store/space-alarm.js";
import { messageOf } from "../util/errors.js";
import {
  type NbdBufferState,
  registerDiskMetrics,
  registerIoEngineMetrics,
  registerNbdMetrics,
  registerPoolMetrics,
} from "./pool-metrics.js";
import { type ReplicatedFrontend, registerReplicaMetrics } from "./replica-metrics.js";
import { registerVolumeMetrics } from "./volume-metrics.js";

// Prometheus metrics of what the engine knows, on a prom-client registry of
// its own (not prom-client's global one): pool space, thin provisioning and
// space alerts, the disk's capability against its reservations, per volume
// its allocation, its requests and what QoS did to its I/O, and the replicas
// of the replicated volumes attached here. Every family is read from live
// state when scraped; nothing on the request path calls prom-client (the
// store keeps plain-number counters that the families read).

/** What one engine's metrics are read from. */
export interface EngineMetricsSources {
  pool: Pool;
  qos: QosManager;
  alarm: SpaceAlarm;
  /** The NBD server's byte budget; absent: not shown. */
  nbd?: NbdBufferState;
  /** Replicated volumes whose frontend runs on this node, by name; absent: none shown. */
  frontends?: ReadonlyMap<string, ReplicatedFrontend>;
}

/** A registry with every metric family of one engine, each read from `sources` on each scrape. */
export function engineRegistry(sources: EngineMetricsSources): Registry {
  const registry = new Registry();
  if (sources.nbd) registerNbdMetrics(registry, sources.nbd);
  registerIoEngineMetrics(registry);
  registerPoolMetrics(registry, sources.pool, sources.alarm);
  registerDiskMetrics(registry, sources.pool, sources.qos);
  registerVolumeMetrics(registry, sources.pool, sources.qos);
  if (sources.frontends) registerReplicaMetrics(registry, sources.frontends);
  return registry;
}

/** What {@link serveMetrics} serves: the text of a scrape and its content type. */
export type MetricsSource = Pick<Registry, "metrics" | "contentType">;

/**
 * Serves `registry` as GET /metrics on `address` (`host:port`), anything
 * else 404; a scrape whose collection fails answers 500 with the error's
 * message. Resolves with the bound address (a port 0 resolved).
 */
export function serveMetrics(req: {
  address: string;
  registry: MetricsSource;
}): Promise<{ address: string; close(): Promise<void> }> {
  const { address, registry } = req;
  const at = address.lastIndexOf(":");
  const server = http.createServer((request, res) => {
    if (request.method !== "GET" || (request.url ?? "").split("?")[0] !== "/metrics") {
      res.writeHead(404, { "content-type": "text/plain" }).end("only GET /metrics is served\n");
      return;
    }
    registry.metrics().then(
      (text) => res.writeHead(200, { "content-type": registry.contentType }).end(text),
      (error: unknown) =>
        res.writeHead(500, { "content-type": "text/plain" }).end(`metrics collection failed: ${messageOf(error)}\n`),
    );
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
