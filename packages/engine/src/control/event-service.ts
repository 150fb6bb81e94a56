import type { ServerWritableStream } from "@grpc/grpc-js";
import { KeelsonError, toServiceError } from "@keelson/sdk";
import type { EventServiceServer, WireEvent, WireWatchRequest } from "@keelson/sdk/experimental";
import type { ClusterMembership } from "../cluster/membership.js";
import { ALL_OF_REVISION, type MetadataEvent, type MetadataWatch } from "../metadata/index.js";
import { messageOf } from "../util/errors.js";
import type { Logger } from "../util/log.js";
import { refuseUndecodable } from "./request-decoding.js";
import { authorizeCall, type CallerCheck } from "./roles.js";

type EventKind = NonNullable<WireEvent["kind"]>;

/** The volume an event is about ("" for node and pool events, which every watch gets). */
function volumeOf(e: MetadataEvent): string {
  return e.type === "node" || e.type === "alive" || e.type === "spaceAlert" ? "" : e.volume;
}

/** The wire form of a metadata event. */
export function eventToWire(e: MetadataEvent): EventKind {
  switch (e.type) {
    case "volume":
      return {
        $case: "volume",
        value: {
          volume: e.volume,
          deleted: e.deleted,
          replicas: e.record?.replicas ?? [],
          inSync: e.record?.inSync ?? [],
          sizeBytes: e.record?.sizeBytes ?? 0,
          declared: e.record?.declared
            ? { nodeId: e.record.declared.nodeId, reason: e.record.declared.reason, at: new Date(e.record.declared.atMs) }
            : undefined,
        },
      };
    case "attachments":
      return {
        $case: "attachments",
        value: {
          volume: e.volume,
          attachments: e.entries.map((a) => ({ nodeId: a.nodeId, readOnly: a.readOnly, epoch: a.epoch })),
        },
      };
    case "snapshot":
      return { $case: "snapshot", value: { volume: e.volume, name: e.name, deleted: e.deleted, holders: [...e.holders] } };
    case "node":
      return { $case: "node", value: { nodeId: e.nodeId, state: e.state, aliveChanged: false, alive: false } };
    case "alive":
      return { $case: "node", value: { nodeId: e.nodeId, state: "", aliveChanged: true, alive: e.alive } };
    case "status":
      return { $case: "status", value: { volume: e.volume, ...e.status } };
    case "spaceAlert": {
      const { nodeId, poolUid, thresholdPercent, state, usedBytes, totalBytes } = e.alert;
      return {
        $case: "spaceAlert",
        value: { nodeId, poolUid, thresholdPercent, raised: state === "raised", usedBytes, totalBytes },
      };
    }
  }
}

/**
 * Serves one Watch call from the metadata store's history: from the cursor
 * (or from now), the changes after it as typed events, filtered by volume.
 */
async function serveWatch(m: ClusterMembership, call: ServerWritableStream<WireWatchRequest, WireEvent>, log: Logger) {
  const req = call.request;
  let afterRevision = req.afterRevision;
  let afterIndex = req.afterIndex;
  if (afterRevision === 0) {
    afterRevision = await m.metadata.headRevision();
    afterIndex = ALL_OF_REVISION;
  }
  call.write({ revision: afterRevision, index: afterIndex, at: new Date(), kind: { $case: "watching", value: {} } });
  let watch: MetadataWatch | null = null;
  let ended = false;
  const end = (error?: KeelsonError): void => {
    if (ended) return;
    ended = true;
    void watch?.cancel();
    if (error) call.emit("error", toServiceError(error));
    else call.end();
  };
  call.on("cancelled", () => end());
  call.on("close", () => end());
  watch = await m.metadata.watch(
    { revision: afterRevision, index: afterIndex },
    {
      event: ({ revision, index, event }) => {
        if (ended) return;
        const volume = volumeOf(event);
        if (req.volume && volume !== "" && volume !== req.volume) return;
        call.write({ revision, index, at: new Date(), kind: eventToWire(event) });
      },
      error: (error) => {
        const cause = error.cause instanceof Error ? error.cause.message : error.message;
        log.log("warn", "watch ended by etcd", { error: cause, compacted: error.code === "WATCH_COMPACTED" });
        end(error);
      },
    },
  );
  if (ended) void watch.cancel();
}

/** keelson.v1.EventService of one engine (cluster only); with `callerCheck` "certificate-role" only the roles RPC_ROLES.Watch names may watch. */
export function eventService(
  membership: () => ClusterMembership | null,
  log: Logger,
  callerCheck: CallerCheck = "none",
): EventServiceServer {
  return {
    watch: (call) => {
      try {
        authorizeCall(callerCheck, "Watch", call.getAuthContext?.()?.sslPeerCertificate);
        refuseUndecodable("Watch", call.request);
      } catch (error) {
        call.emit("error", toServiceError(error as KeelsonError));
        return;
      }
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
            : new KeelsonError({ code: "UNAVAILABLE", message: `watch: ${messageOf(error)}`, cause: error });
        call.emit("error", toServiceError(e));
      });
    },
  };
}
