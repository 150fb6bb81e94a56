import { KeelsonError } from "@keelson/sdk";
import { epochKey, supersededError } from "../cluster/epochs.js";
import { type ClusterMembership, KEY_PREFIX } from "../cluster/membership.js";

const ATTACHMENTS = `${KEY_PREFIX}/attachments/`;
/** Compare-and-swap attempts on the attachment record before giving up under contention. */
const MAX_ATTEMPTS = 16;

/** One node's attachment of a volume, as etcd records it. */
export interface AttachmentEntry {
  nodeId: string;
  readOnly: boolean;
  /** The writer's own epoch; a reader's is the epoch current when it attached. */
  epoch: number;
  attachedAtMs: number;
}

/** The volume's attachments and the exact JSON they were read from (for a compare-and-swap). */
export interface AttachmentsRead {
  entries: AttachmentEntry[];
  json: string | null;
}

export async function readAttachments(m: ClusterMembership, name: string): Promise<AttachmentsRead> {
  const json = await m.client.get(`${ATTACHMENTS}${name}`).string();
  return { entries: json === null ? [] : (JSON.parse(json) as AttachmentEntry[]), json };
}

/**
 * Why `nodeId` may not attach the volume in this mode now, or null. One
 * writable attachment at a time, and none beside read-only ones: a reader
 * next to a writer could read a replica the writer has just left behind.
 * A writable attachment on another node is taken over only when asked
 * (that node is lost: its frontend will be fenced).
 */
export function attachConflict(
  entries: readonly AttachmentEntry[],
  nodeId: string,
  readOnly: boolean,
  takeover: boolean,
): KeelsonError | null {
  const writer = entries.find((e) => !e.readOnly);
  const readers = entries.filter((e) => e.readOnly);
  if (readOnly && writer) {
    return new KeelsonError({
      code: "ATTACHED_ELSEWHERE",
      message: `attached writable on ${writer.nodeId} (epoch ${writer.epoch}); detach it before attaching read-only`,
    });
  }
  if (!readOnly && readers.length > 0) {
    return new KeelsonError({
      code: "ATTACHED_ELSEWHERE",
      message: `attached read-only on ${readers.map((r) => r.nodeId).join(", ")}; detach those before attaching writable`,
    });
  }
  if (!readOnly && writer && writer.nodeId !== nodeId && !takeover) {
    return new KeelsonError({
      code: "ATTACHED_ELSEWHERE",
      message: `attached writable on ${writer.nodeId} (epoch ${writer.epoch}); detach it there first, or take it over if ${writer.nodeId} is lost`,
    });
  }
  return null;
}

/**
 * Records `entry` (replacing this node's entry, and for a writer any other
 * writer it took over from), only while `entry.epoch` is the volume's
 * current epoch and no conflicting attachment appeared meanwhile.
 */
export async function recordAttachment(
  m: ClusterMembership,
  name: string,
  entry: AttachmentEntry,
  takeover: boolean,
): Promise<void> {
  const key = `${ATTACHMENTS}${name}`;
  for (let attempt = 0; attempt < MAX_ATTEMPTS; attempt++) {
    const { entries, json } = await readAttachments(m, name);
    const conflict = attachConflict(entries, entry.nodeId, entry.readOnly, takeover);
    if (conflict) throw conflict;
    const kept = entries.filter((e) => e.nodeId !== entry.nodeId && e.readOnly);
    const updated = JSON.stringify([...kept, entry]);
    const guard = m.client.if(epochKey(name), "Value", "==", String(entry.epoch));
    const txn = json === null ? guard.and(key, "Create", "==", 0) : guard.and(key, "Value", "==", json);
    const result = await txn.then(m.client.put(key).value(updated)).commit();
    if (result.succeeded) return;
    const stale = await supersededError(m.client, name, entry.epoch);
    if (stale) throw stale;
  }
  throw new KeelsonError({ code: "UNAVAILABLE", message: `volume ${name}: its attachment record changed under every attempt` });
}

/**
 * Removes `nodeId`'s attachment from the record (only the one at `epoch`
 * when given, so a late detach never removes a newer attachment). Idempotent.
 */
export async function removeAttachment(m: ClusterMembership, name: string, nodeId: string, epoch?: number): Promise<void> {
  const key = `${ATTACHMENTS}${name}`;
  for (let attempt = 0; attempt < MAX_ATTEMPTS; attempt++) {
    const { entries, json } = await readAttachments(m, name);
    if (json === null) return;
    const kept = entries.filter((e) => !(e.nodeId === nodeId && (epoch === undefined || e.epoch === epoch)));
    if (kept.length === entries.length) return;
    const txn = m.client.if(key, "Value", "==", json);
    const result = await (kept.length === 0
      ? txn.then(m.client.delete().key(key))
      : txn.then(m.client.put(key).value(JSON.stringify(kept)))
    ).commit();
    if (result.succeeded) return;
  }
  throw new KeelsonError({ code: "UNAVAILABLE", message: `volume ${name}: its attachment record changed under every attempt` });
}
