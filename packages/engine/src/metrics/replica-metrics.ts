import type { Registry } from "prom-client";
import { type ReplicaState, type ReplicaStatus, volumeState } from "../replication/replica-set.js";
import type { IoCounters } from "../store/io-counters.js";
import { CollectedHistogram } from "./collected-histogram.js";
import { counter, gauge, type Sample } from "./families.js";
import { requestLatencies } from "./volume-metrics.js";

/** What the metrics read of a replicated volume whose frontend runs on this node (a ReplicatedVolume). */
export interface ReplicatedFrontend {
  readonly name: string;
  /** Not closed, and not fenced by a newer attachment: a frontend that does not serve is not shown. */
  readonly serving: boolean;
  /** Rebuilds finished since attach. */
  readonly rebuildsCompleted: number;
  /** The replicas and their state now. */
  status(): ReplicaStatus[];
  /** What clients asked of it through its exports on this node. */
  readonly io: IoCounters;
}

/**
 * Every state a replica may be in, and every state of a volume: a series per
 * state, 1 for the one it is in and 0 for the others, so that a state left
 * reads 0 rather than vanishing. Records, so that a state added to the
 * types does not compile until it is listed here.
 */
const REPLICA_STATES: Record<ReplicaState, true> = { healthy: true, rebuilding: true, faulted: true };
const VOLUME_STATES: Record<ReturnType<typeof volumeState>, true> = {
  healthy: true,
  degraded: true,
  rebuilding: true,
  faulted: true,
};

type ReplicaLabel = "volume" | "replica";

/**
 * Replicated volumes attached on this node, as their frontend sees them: per
 * replica (`replica` = its node id) its state, whether it is in sync and the
 * progress of its rebuild; per volume its state and rebuilds finished. Read
 * from the frontends on each scrape: a detached volume is gone from the next.
 */
export function registerReplicaMetrics(registry: Registry, frontends: ReadonlyMap<string, ReplicatedFrontend>): void {
  /** Each serving frontend with its replicas' status, read once per family and scrape. */
  const serving = () => [...frontends.values()].filter((rv) => rv.serving).map((rv) => ({ rv, replicas: rv.status() }));
  const perReplica = (value: (r: ReplicaStatus) => number) => (): Array<Sample<ReplicaLabel>> =>
    serving().flatMap(({ rv, replicas }) => replicas.map((r) => [{ volume: rv.name, replica: r.nodeId }, value(r)] as const));
  gauge(registry, {
    name: "keelson_replica_state",
    help: "1 for the state the replica is in as its volume's frontend on this node sees it (healthy: takes writes and serves reads; rebuilding: takes writes while what it lacks is copied to it; faulted: out of the I/O path), 0 for the others.",
    labelNames: ["volume", "replica", "state"],
    read: () =>
      serving().flatMap(({ rv, replicas }) =>
        replicas.flatMap((r) =>
          Object.keys(REPLICA_STATES).map(
            (state) => [{ volume: rv.name, replica: r.nodeId, state }, r.state === state ? 1 : 0] as const,
          ),
        ),
      ),
  });
  gauge(registry, {
    name: "keelson_replica_in_sync",
    help: "1 while the replica holds every write the frontend acknowledged and serves reads (healthy), 0 while it is faulted or being rebuilt.",
    labelNames: ["volume", "replica"],
    read: perReplica((r) => (r.state === "healthy" ? 1 : 0)),
  });
  gauge(registry, {
    name: "keelson_replica_rebuild_copied_bytes",
    help: "Bytes the replica's rebuild has copied to it: the rebuild under way, else the last one since attach (0 if none).",
    labelNames: ["volume", "replica"],
    read: perReplica((r) => r.rebuiltBytes),
  });
  gauge(registry, {
    name: "keelson_replica_rebuild_planned_bytes",
    help: "Bytes the replica's rebuild sets out to copy (the whole volume for a full rebuild, the regions it missed otherwise): the rebuild under way, else the last one since attach (0 if none).",
    labelNames: ["volume", "replica"],
    read: perReplica((r) => r.rebuildTotalBytes),
  });
  gauge(registry, {
    name: "keelson_replicated_volume_state",
    help: "1 for the state of the replicated volume attached on this node (healthy; degraded: a replica is faulted; rebuilding: none is, one is being rebuilt; faulted: no healthy replica), 0 for the others.",
    labelNames: ["volume", "state"],
    read: () =>
      serving().flatMap(({ rv, replicas }) => {
        const now = volumeState(replicas);
        return Object.keys(VOLUME_STATES).map((state) => [{ volume: rv.name, state }, now === state ? 1 : 0] as const);
      }),
  });
  counter(registry, {
    name: "keelson_replicated_volume_rebuilds_total",
    help: "Replica rebuilds the volume's frontend on this node finished since it was attached.",
    labelNames: ["volume"],
    read: () => serving().map(({ rv }) => [{ volume: rv.name }, rv.rebuildsCompleted] as const),
  });
  registerFrontendRequestMetrics(registry, serving);
}

/**
 * What clients asked of each replicated volume through its frontend on this
 * node, as the per-volume families show for local volumes: requests as they
 * arrived, bytes, in flight, and latency from arrival to acknowledgement (a
 * write's once every replica settled). Each replica's own volume, on its
 * node, counts the replica traffic instead.
 */
function registerFrontendRequestMetrics(registry: Registry, serving: () => Array<{ rv: ReplicatedFrontend }>): void {
  const perVolume = (value: (io: IoCounters) => number) => (): Array<Sample<"volume">> =>
    serving().map(({ rv }) => [{ volume: rv.name }, value(rv.io)] as const);
  const requests = (name: string, help: string, value: (io: IoCounters) => number) =>
    counter(registry, { name, help, labelNames: ["volume"], read: perVolume(value) });
  requests(
    "keelson_replicated_volume_read_requests_total",
    "NBD READ requests of the replicated volume on this node.",
    (io) => io.readOps,
  );
  requests(
    "keelson_replicated_volume_read_bytes_total",
    "Bytes NBD READ requests of the replicated volume on this node asked for.",
    (io) => io.readBytes,
  );
  requests(
    "keelson_replicated_volume_write_requests_total",
    "NBD WRITE requests of the replicated volume on this node.",
    (io) => io.writeOps,
  );
  requests(
    "keelson_replicated_volume_write_bytes_total",
    "Payload bytes of NBD WRITE requests of the replicated volume on this node.",
    (io) => io.writeBytes,
  );
  requests(
    "keelson_replicated_volume_zero_requests_total",
    "NBD WRITE_ZEROES and TRIM requests of the replicated volume on this node.",
    (io) => io.zeroOps,
  );
  requests(
    "keelson_replicated_volume_flush_requests_total",
    "NBD FLUSH requests of the replicated volume on this node.",
    (io) => io.flushOps,
  );
  gauge(registry, {
    name: "keelson_replicated_volume_requests_in_flight",
    help: "Reads, writes, zeroes and flushes of the replicated volume on this node started and not acknowledged.",
    labelNames: ["volume"],
    read: perVolume((io) => io.inFlight),
  });
  new CollectedHistogram<"volume" | "op">({
    name: "keelson_replicated_volume_request_duration_seconds",
    help: "Time from an NBD request's arrival at the replicated volume's frontend (a write's once its payload is in) to its acknowledgement, by kind.",
    registry,
    read: () => serving().flatMap(({ rv }) => requestLatencies(rv.name, rv.io)),
  });
}
