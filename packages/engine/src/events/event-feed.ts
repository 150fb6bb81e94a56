import type { ServerWritableStream } from "@grpc/grpc-js";
import { KeelsonError, toServiceError } from "@keelson/sdk";
import type { EventServiceServer, WireEvent, WireWatchRequest } from "@keelson/sdk/experimental";
import type { Watcher } from "etcd3";
import { type ClusterMembership, KEY_PREFIX } from "../cluster/membership.js";
import type { Logger } from "../util/log.js";

/** Index meaning "every event of that revision": a stream that starts "from now". */
export const ALL_OF_REVISION = 0xffff_ffff;

/** One etcd key change under the cluster's prefix. */
interface KeyChange {
  key: string;
  value: string;
  deleted: boolean;
}

type EventKind = NonNullable<WireEvent["kind"]>;

function parse<T>(json: string): T | null {
  try {
    return JSON.parse(json) as T;
  } catch {
    return null;
  }
}

/**
 * The typed event a key change is, or null for keys that are no event
 * (epochs, activity logs, disk reports, the election). Exported for tests.
 */
export function eventOf(c: KeyChange): { kind: EventKind; volume: string } | null {
  const rest = c.key.slice(KEY_PREFIX.length + 1);
  const slash = rest.indexOf("/");
  if (slash < 0) return null;
  const area = rest.slice(0, slash);
  const id = rest.slice(slash + 1);
  switch (area) {
    case "volumes": {
      const r = c.deleted ? null : parse<{ replicas: string[]; inSync: string[]; sizeBytes: number }>(c.value);
      return {
        volume: id,
        kind: {
          $case: "volume",
          value: {
            volume: id,
            deleted: c.deleted,
            replicas: r?.replicas ?? [],
            inSync: r?.inSync ?? [],
            sizeBytes: r?.sizeBytes ?? 0,
          },
        },
      };
    }
    case "attachments": {
      const entries = c.deleted ? [] : (parse<{ nodeId: string; readOnly: boolean; epoch: number }[]>(c.value) ?? []);
      return {
        volume: id,
        kind: {
          $case: "attachments",
          value: { volume: id, attachments: entries.map((e) => ({ nodeId: e.nodeId, readOnly: e.readOnly, epoch: e.epoch })) },
        },
      };
    }
    case "snapshots": {
      const at = id.indexOf("/");
      if (at < 0) return null;
      const volume = id.slice(0, at);
      const r = c.deleted ? null : parse<{ holders: string[] }>(c.value);
      return {
        volume,
        kind: { $case: "snapshot", value: { volume, name: id.slice(at + 1), deleted: c.deleted, holders: r?.holders ?? [] } },
      };
    }
    case "nodes": {
      const r = c.deleted ? null : parse<{ state: string }>(c.value);
      return {
        volume: "",
        kind: { $case: "node", value: { nodeId: id, state: r?.state ?? "", aliveChanged: false, alive: false } },
      };
    }
    case "alive":
      return { volume: "", kind: { $case: "node", value: { nodeId: id, state: "", aliveChanged: true, alive: !c.deleted } } };
    case "status": {
      const r = parse<{
        nodeId: string;
        epoch: number;
        state: string;
        replicas: { nodeId: string; state: string; rebuiltBytes: number; rebuildTotalBytes: number }[];
      }>(c.value);
      if (!r) return null;
      return { volume: id, kind: { $case: "status", value: { volume: id, ...r } } };
    }
    default:
      return null;
  }
}

/**
 * Serves one Watch call from etcd's history: a watch on the cluster prefix
 * from the cursor's revision, each change numbered within its revision (all
 * keys count, so the numbering is the same on every reconnect), the ones at
 * or before the cursor skipped, the rest mapped to typed events.
 */
async function serveWatch(m: ClusterMembership, call: ServerWritableStream<WireWatchRequest, WireEvent>, log: Logger) {
  const req = call.request;
  let afterRevision = req.afterRevision;
  let afterIndex = req.afterIndex;
  if (afterRevision === 0) {
    const res = await m.client.get(`${KEY_PREFIX}/`).exec();
    afterRevision = Number(res.header.revision);
    afterIndex = ALL_OF_REVISION;
  }
  call.write({ revision: afterRevision, index: afterIndex, at: new Date(), kind: { $case: "watching", value: {} } });
  let watcher: Watcher | null = null;
  let ended = false;
  const end = (error?: KeelsonError): void => {
    if (ended) return;
    ended = true;
    void watcher?.cancel().catch(() => undefined);
    if (error) call.emit("error", toServiceError(error));
    else call.end();
  };
  call.on("cancelled", () => end());
  call.on("close", () => end());
  let revision = 0;
  let index = 0;
  const startRevision = afterIndex === ALL_OF_REVISION ? afterRevision + 1 : afterRevision;
  watcher = await m.client.watch().prefix(`${KEY_PREFIX}/`).startRevision(String(startRevision)).create();
  if (ended) {
    void watcher.cancel();
    return;
  }
  watcher.on("data", (res) => {
    for (const e of res.events) {
      const rev = Number(e.kv.mod_revision);
      if (rev !== revision) {
        revision = rev;
        index = 0;
      } else index++;
      if (rev < afterRevision || (rev === afterRevision && index <= afterIndex)) continue;
      const ev = eventOf({ key: e.kv.key.toString(), value: e.kv.value.toString(), deleted: e.type === "Delete" });
      if (!ev || (req.volume && ev.volume !== "" && ev.volume !== req.volume)) continue;
      call.write({ revision: rev, index, at: new Date(), kind: ev.kind });
    }
  });
  watcher.on("error", (error) => {
    void (async () => {
      // etcd cancels a watch that starts before its compaction point without saying why through
      // this client library: ask for the start revision itself, which then fails the same way.
      const compacted = /compact/i.test(error.message) || (await isCompacted(m, startRevision));
      log.log("warn", "watch ended by etcd", { error: error.message, compacted });
      end(
        new KeelsonError({
          code: compacted ? "WATCH_COMPACTED" : "UNAVAILABLE",
          message: compacted
            ? `etcd no longer keeps the events after revision ${afterRevision}: read the current state and watch from now`
            : `etcd watch failed: ${error.message}`,
        }),
      );
    })();
  });
}

/** True when etcd has compacted its history past `revision` (a read at it fails so). */
async function isCompacted(m: ClusterMembership, revision: number): Promise<boolean> {
  try {
    await m.client.get(`${KEY_PREFIX}/`).revision(revision).exec();
    return false;
  } catch (error) {
    return /compact/i.test((error as Error).message);
  }
}

/** keelson.v1.EventService of one engine (cluster only). */
export function eventService(membership: () => ClusterMembership | null, log: Logger): EventServiceServer {
  return {
    watch: (call) => {
      const m = membership();
      if (!m) {
        call.emit(
          "error",
          toServiceError(
            new KeelsonError({ code: "INVALID_ARGUMENT", message: "Watch needs a cluster: start keelsond with --etcd" }),
          ),
        );
        return;
      }
      serveWatch(m, call, log).catch((error: unknown) => {
        const e =
          error instanceof KeelsonError
            ? error
            : new KeelsonError({ code: "UNAVAILABLE", message: `watch: ${(error as Error).message}`, cause: error });
        call.emit("error", toServiceError(e));
      });
    },
  };
}
