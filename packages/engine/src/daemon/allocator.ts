import { nativeAddon } from "../device-io/uring-addon.js";

const MIB = 1024 * 1024;

/**
 * glibc malloc settings for the daemon (native/uring/allocator.c says why):
 * up to `trimBytes` of freed memory stays mapped instead of going back to the
 * kernel, and blocks up to `mmapThresholdBytes` come from the heap, so the
 * memory the collector frees in batches is reused without page faults. The
 * cost is up to `trimBytes` of free memory the daemon keeps mapped after a burst.
 */
export const ALLOCATOR_TUNING = { trimBytes: 128 * MIB, topPadBytes: 16 * MIB, mmapThresholdBytes: 32 * MIB } as const;

/** Applies {@link ALLOCATOR_TUNING}; null when it took, else why not (no addon, an addon built before it, not glibc, refused). */
export function tuneAllocator(): string | null {
  const native = nativeAddon();
  if (!native.addon) return native.why;
  if (typeof native.addon.tuneAllocator !== "function") {
    return "the native addon predates malloc tuning: rebuild it (node scripts/build-native.mjs --force)";
  }
  const t = ALLOCATOR_TUNING;
  const refused = native.addon.tuneAllocator(t.trimBytes, t.topPadBytes, t.mmapThresholdBytes);
  if (refused === null) return "the C library is not glibc: malloc keeps its defaults";
  return refused.length === 0 ? null : `glibc refused ${refused.join(", ")}`;
}
