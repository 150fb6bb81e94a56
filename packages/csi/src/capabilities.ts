import { invalidField } from "./csi-errors.js";

/** A CSI VolumeCapability as proto-loader decodes it (enums as strings, oneof `access_type` named). */
export interface WireVolumeCapability {
  block?: object | null;
  mount?: { fs_type?: string; mount_flags?: string[]; volume_mount_group?: string } | null;
  access_mode?: { mode?: string } | null;
  access_type?: "block" | "mount";
}

/**
 * Access modes keelson serves: one writer node (its frontend) with any number of pods on that node, or
 * readers on many nodes (read-only attachments). Writers on several nodes at once would need a cluster
 * filesystem or a shared-disk protocol above the volume, which keelson does not give.
 */
const SUPPORTED_MODES = new Set([
  "SINGLE_NODE_WRITER",
  "SINGLE_NODE_READER_ONLY",
  "MULTI_NODE_READER_ONLY",
  "SINGLE_NODE_SINGLE_WRITER",
  "SINGLE_NODE_MULTI_WRITER",
]);
const FS_TYPES = new Set(["", "ext4", "xfs"]);

/** Why keelson cannot serve `cap`, or null when it can. */
export function unsupportedReason(cap: WireVolumeCapability): string | null {
  const mode = cap.access_mode?.mode ?? "UNKNOWN";
  if (!SUPPORTED_MODES.has(mode)) return `access mode ${mode} is not supported (one writer node, or readers on many)`;
  const type = cap.access_type ?? (cap.block ? "block" : cap.mount ? "mount" : undefined);
  if (type === undefined) return "an access type (block or mount) is required";
  if (type === "mount" && !FS_TYPES.has(cap.mount?.fs_type ?? "")) {
    return `filesystem ${JSON.stringify(cap.mount?.fs_type)} is not supported (ext4 or xfs)`;
  }
  return null;
}

/** The capabilities of a request, required and non-empty, each with an access mode and type. */
export function requireCapabilities(caps: WireVolumeCapability[] | undefined, field: string): WireVolumeCapability[] {
  if (!caps || caps.length === 0) throw invalidField(field, "at least one volume capability is required");
  for (const [i, cap] of caps.entries()) {
    if (!cap.access_mode?.mode || cap.access_mode.mode === "UNKNOWN") {
      throw invalidField(`${field}[${i}].access_mode`, "is required");
    }
    if (!cap.access_type && !cap.block && !cap.mount)
      throw invalidField(`${field}[${i}].access_type`, "block or mount is required");
  }
  return caps;
}

/** True when the mode lets the node write. */
export function isWriterMode(cap: WireVolumeCapability): boolean {
  const mode = cap.access_mode?.mode ?? "";
  return mode !== "SINGLE_NODE_READER_ONLY" && mode !== "MULTI_NODE_READER_ONLY";
}
