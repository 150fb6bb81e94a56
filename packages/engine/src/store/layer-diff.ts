import { KeelsonError } from "@keelson/sdk";
import type { Layer } from "./layer.js";
import type { ChainView } from "./volume.js";

/** Extents of a chain that may differ from an older point in it, from the layers' allocation maps. */
export interface ChainChanges {
  /** The pool's extent size: each index in `extents` covers this many bytes. */
  readonly extentBytes: number;
  /** The view's size; extents past it are left out. */
  readonly sizeBytes: number;
  /** Logical extent numbers, ascending. */
  readonly extents: number[];
}

/**
 * The extents of `view` that may differ from `base` (an older point in the
 * same chain), or every extent any of its layers holds when `base` is null.
 * A layer holds an entry for each extent written, zeroed or trimmed while it
 * was the head, so the layers above `base`'s layer name every extent whose
 * content changed since it: copying those (and nothing else) onto a copy of
 * `base` makes it equal to `view`. INVALID_ARGUMENT when `base`'s layer is
 * not in the chain (another volume's snapshot, or one folded away).
 */
export function chainChanges(view: ChainView, base: ChainView | null, extentBytes: number): ChainChanges {
  const stop: Layer | null = base === null ? null : (base.chain[0] ?? null);
  if (stop !== null && !view.chain.includes(stop)) {
    throw new KeelsonError({
      code: "INVALID_ARGUMENT",
      message: `${base?.name} is not an older point in the chain of ${view.name}`,
    });
  }
  const last = Math.ceil(view.sizeBytes / extentBytes);
  const seen = new Set<number>();
  for (const layer of view.chain) {
    if (layer === stop) break;
    for (const logical of layer.extents.keys()) if (logical < last) seen.add(logical);
  }
  return { extentBytes, sizeBytes: view.sizeBytes, extents: [...seen].sort((a, b) => a - b) };
}
