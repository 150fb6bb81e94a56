import { KeelsonError } from "@keelson/sdk";
import { BLOCK_SIZE_BYTES } from "./layout.js";

/** Largest volume: 1 PiB (extent numbers stay well inside 32 bits). */
export const MAX_VOLUME_SIZE_BYTES = 2 ** 50;
/** Most volumes one pool holds. */
export const MAX_VOLUMES = 1024;
export const MAX_LABELS = 64;
/** Most snapshots one pool holds (the catalog of a checkpoint is bounded). */
export const MAX_SNAPSHOTS = 4096;
/** Most layers a volume reads through; bounds the per-block lookup of every read. */
export const MAX_CHAIN_LAYERS = 256;
const MAX_LABEL_KEY_CHARS = 63;
const MAX_LABEL_VALUE_CHARS = 256;
const NAME_PATTERN = /^[a-z0-9][a-z0-9._-]{0,62}$/;

function invalid(message: string): KeelsonError {
  return new KeelsonError({ code: "INVALID_ARGUMENT", message });
}

function validateName(name: unknown, what: string): string {
  if (typeof name !== "string" || !NAME_PATTERN.test(name)) {
    throw invalid(
      `invalid ${what} name ${JSON.stringify(name)}: use 1-63 characters from a-z, 0-9, '-', '_' and '.', starting with a letter or digit`,
    );
  }
  return name;
}

export function validateVolumeName(name: unknown): string {
  return validateName(name, "volume");
}

export function validateSnapshotName(name: unknown): string {
  return validateName(name, "snapshot");
}

export function validateSizeBytes(sizeBytes: unknown): number {
  if (
    typeof sizeBytes !== "number" ||
    !Number.isSafeInteger(sizeBytes) ||
    sizeBytes <= 0 ||
    sizeBytes % BLOCK_SIZE_BYTES !== 0 ||
    sizeBytes > MAX_VOLUME_SIZE_BYTES
  ) {
    throw invalid(
      `invalid sizeBytes ${String(sizeBytes)}: must be a positive multiple of ${BLOCK_SIZE_BYTES} no larger than ${MAX_VOLUME_SIZE_BYTES}`,
    );
  }
  return sizeBytes;
}

export function validateLabels(labels: Record<string, string>): Record<string, string> {
  const entries = Object.entries(labels);
  if (entries.length > MAX_LABELS) throw invalid(`too many labels (${entries.length}): at most ${MAX_LABELS}`);
  for (const [k, v] of entries) {
    if (k.length === 0 || k.length > MAX_LABEL_KEY_CHARS) {
      throw invalid(`invalid label key ${JSON.stringify(k)}: 1-${MAX_LABEL_KEY_CHARS} characters`);
    }
    if (v.length > MAX_LABEL_VALUE_CHARS) {
      throw invalid(`label ${k} value is ${v.length} characters: at most ${MAX_LABEL_VALUE_CHARS}`);
    }
  }
  return Object.fromEntries(entries.sort(([a], [b]) => (a < b ? -1 : a > b ? 1 : 0)));
}

export function validateReplicas(replicas: unknown): number {
  const n = replicas === undefined || replicas === 0 ? 1 : replicas;
  if (typeof n !== "number" || !Number.isInteger(n) || n < 1 || n > 1) {
    throw invalid(`invalid replicas ${String(replicas)}: a single-node engine serves exactly 1 replica`);
  }
  return n;
}

/** True when two validated label sets are equal (an idempotent create asks for the same labels). */
export function sameLabels(a: Record<string, string>, b: Record<string, string>): boolean {
  return JSON.stringify(a) === JSON.stringify(b);
}
