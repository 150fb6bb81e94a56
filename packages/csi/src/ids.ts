import { createHash } from "node:crypto";
import { invalidField } from "./csi-errors.js";

/** keelson's rule for volume and snapshot names. */
const KEELSON_NAME = /^[a-z0-9][a-z0-9._-]{0,62}$/;
const MAX_CSI_NAME = 256;

/**
 * The keelson name for a CSI name (CreateVolume's, CreateSnapshot's): the name itself when keelson takes
 * it (external-provisioner's `pvc-<uid>` does), else `csi-` and a digest of it, so that the same CSI name
 * always maps to the same volume (CreateVolume is retried with the same name) and two names never share one.
 */
export function keelsonNameOf(csiName: string, field: string): string {
  if (csiName.length === 0) throw invalidField(field, "is required");
  if (csiName.length > MAX_CSI_NAME) throw invalidField(field, `at most ${MAX_CSI_NAME} characters`);
  if (KEELSON_NAME.test(csiName)) return csiName;
  return `csi-${createHash("sha256").update(csiName).digest("hex").slice(0, 40)}`;
}

/** A volume id is the keelson volume's name. */
export function volumeNameOf(volumeId: string, field = "volume_id"): string {
  if (!volumeId) throw invalidField(field, "is required");
  if (!KEELSON_NAME.test(volumeId)) throw invalidField(field, `${JSON.stringify(volumeId)} is no keelson volume id`);
  return volumeId;
}

/** A snapshot id is `VOLUME@SNAPSHOT`, the name of its read-only export. */
export function snapshotIdOf(volume: string, snapshot: string): string {
  return `${volume}@${snapshot}`;
}

export function parseSnapshotId(snapshotId: string, field = "snapshot_id"): { volume: string; name: string } {
  const at = snapshotId.indexOf("@");
  const volume = snapshotId.slice(0, at);
  const name = snapshotId.slice(at + 1);
  if (at <= 0 || !KEELSON_NAME.test(volume) || !KEELSON_NAME.test(name)) {
    throw invalidField(field, `${JSON.stringify(snapshotId)} is no keelson snapshot id (VOLUME@SNAPSHOT)`);
  }
  return { volume, name };
}
