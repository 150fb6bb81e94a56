import { KeelsonError } from "@keelson/sdk";
import { type AttachmentEntry, refs, type Version } from "../metadata/index.js";
import { supersededError, whileEpoch } from "./epochs.js";
import type { ClusterMembership } from "./membership.js";

/** Compare-and-swap attempts on the attachment record before giving up under contention. */
const MAX_ATTEMPTS = 16;

export type { AttachmentEntry };

/** The volume's attachments and the version they were read at (null: no record), for a compare-and-swap. */
export interface AttachmentsRead {
  entries: AttachmentEntry[];
  version: Version | null;
}

/** The volume's attachments (none when it has no record). */
export async function readAttachments(m: ClusterMembership, name: string): Promise<AttachmentsRead> {
  const read = await m.metadata.get(refs.attachments(name));
  return { entries: read?.value ?? [], version: read?.version ?? null };
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
  const ref = refs.attachments(name);
  for (let attempt = 0; attempt < MAX_ATTEMPTS; attempt++) {
    const { entries, version } = await readAttachments(m, name);
    const conflict = attachConflict(entries, entry.nodeId, entry.readOnly, takeover);
    if (conflict) throw conflict;
    const kept = entries.filter((e) => e.nodeId !== entry.nodeId && e.readOnly);
    const won = await m.metadata.commit({
      if: [whileEpoch(name, entry.epoch), { ref, version }],
      put: [{ ref, value: [...kept, entry] }],
    });
    if (won) return;
    const stale = await supersededError(m.metadata, name, entry.epoch);
    if (stale) throw stale;
  }
  throw new KeelsonError({ code: "UNAVAILABLE", message: `volume ${name}: its attachment record changed under every attempt` });
}

/**
 * Removes `nodeId`'s attachment from the record (only the one at `epoch`
 * when given, so a late detach never removes a newer attachment). Idempotent.
 */
export async function removeAttachment(m: ClusterMembership, name: string, nodeId: string, epoch?: number): Promise<void> {
  const ref = refs.attachments(name);
  for (let attempt = 0; attempt < MAX_ATTEMPTS; attempt++) {
    const { entries, version } = await readAttachments(m, name);
    if (version === null) return;
    const kept = entries.filter((e) => !(e.nodeId === nodeId && (epoch === undefined || e.epoch === epoch)));
    if (kept.length === entries.length) return;
    const guard = [{ ref, version }];
    const won = await m.metadata.commit(
      kept.length === 0 ? { if: guard, delete: [ref] } : { if: guard, put: [{ ref, value: kept }] },
    );
    if (won) return;
  }
  throw new KeelsonError({ code: "UNAVAILABLE", message: `volume ${name}: its attachment record changed under every attempt` });
}
