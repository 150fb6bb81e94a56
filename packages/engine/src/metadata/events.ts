import { parseKey } from "./keys.js";
import { tryDecodeRecord } from "./records.js";
import type { MetadataEvent } from "./store.js";

/** One key change under the cluster's prefix, as the store reports it. */
export interface KeyChange {
  key: string;
  value: string;
  deleted: boolean;
}

/**
 * The event a key change is, or null for keys that are no event (epochs,
 * disk reports, the election, foreign keys). A record that
 * cannot be decoded reads as empty (a watch must not end on one bad record);
 * a status that cannot be decoded (or was deleted) is no event.
 */
export function eventOf(c: KeyChange): MetadataEvent | null {
  const ref = parseKey(c.key);
  if (!ref) return null;
  const { id } = ref;
  switch (ref.kind) {
    case "volume": {
      const record = c.deleted ? null : tryDecodeRecord({ kind: "volume", id }, c.value);
      return { type: "volume", volume: id, deleted: c.deleted, record };
    }
    case "attachments": {
      const entries = c.deleted ? [] : (tryDecodeRecord({ kind: "attachments", id }, c.value) ?? []);
      return { type: "attachments", volume: id, entries };
    }
    case "snapshot": {
      const at = id.indexOf("/");
      if (at < 0) return null;
      const record = c.deleted ? null : tryDecodeRecord({ kind: "snapshot", id }, c.value);
      return {
        type: "snapshot",
        volume: id.slice(0, at),
        name: id.slice(at + 1),
        deleted: c.deleted,
        holders: record?.holders ?? [],
      };
    }
    case "node": {
      const record = c.deleted ? null : tryDecodeRecord({ kind: "node", id }, c.value);
      return { type: "node", nodeId: id, state: record?.state ?? "" };
    }
    case "alive":
      return { type: "alive", nodeId: id, alive: !c.deleted };
    case "status": {
      const status = c.deleted ? null : tryDecodeRecord({ kind: "status", id }, c.value);
      return status ? { type: "status", volume: id, status } : null;
    }
    case "spaceAlert": {
      // An alert is its put; a deleted or unreadable one is no event.
      const alert = c.deleted ? null : tryDecodeRecord({ kind: "spaceAlert", id }, c.value);
      return alert ? { type: "spaceAlert", alert } : null;
    }
    default:
      return null;
  }
}
