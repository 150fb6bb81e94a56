import { KeelsonError } from "@keelson/sdk";
import { type Condition, type MetadataStore, refs } from "../metadata/index.js";

/** Compare-and-swap attempts before giving up under contention. */
const MAX_EPOCH_ATTEMPTS = 32;

/**
 * Takes the next attachment epoch of a volume for node `holder`: a
 * compare-and-swap on the volume's epoch record, so two attachers racing
 * never get the same epoch and every epoch is larger than all before it.
 * The holder is recorded with it: replicas let only that node write at it.
 */
export async function nextEpoch(metadata: MetadataStore, volume: string, holder: string): Promise<number> {
  const ref = refs.epoch(volume);
  for (let attempt = 0; attempt < MAX_EPOCH_ATTEMPTS; attempt++) {
    const current = await metadata.get(ref);
    const next = (current === null ? 0 : current.value) + 1;
    const won = await metadata.commit({
      if: [{ ref, version: current?.version ?? null }],
      put: [
        { ref, value: next },
        { ref: refs.epochHolder(volume), value: { epoch: next, nodeId: holder } },
      ],
    });
    if (won) return next;
  }
  throw new KeelsonError({
    code: "UNAVAILABLE",
    message: `epoch of volume ${volume} is contended: no compare-and-swap won in ${MAX_EPOCH_ATTEMPTS} attempts`,
  });
}

/** The condition "`epoch` is the volume's current epoch": writes made only while it holds carry it. */
export function whileEpoch(volume: string, epoch: number): Condition {
  return { ref: refs.epoch(volume), equals: epoch };
}

/**
 * After a write guarded by `epoch` failed: EPOCH_STALE when a newer epoch
 * exists (the writer was fenced), null when the epoch still holds (another
 * compare in the same transaction failed; the caller may try again).
 */
export async function supersededError(metadata: MetadataStore, volume: string, epoch: number): Promise<KeelsonError | null> {
  const current = await metadata.get(refs.epoch(volume));
  if (current?.value === epoch) return null;
  return new KeelsonError({
    code: "EPOCH_STALE",
    message: `volume ${volume}: epoch ${epoch} was superseded by ${current === null ? null : current.value}`,
  });
}

/** The volume's current attachment epoch (0 when never attached). */
export async function currentEpoch(metadata: MetadataStore, volume: string): Promise<number> {
  return (await metadata.get(refs.epoch(volume)))?.value ?? 0;
}

/** The volume's current epoch and the node that took it; epoch 0 and no holder when never attached. */
export async function epochAndHolder(metadata: MetadataStore, volume: string): Promise<{ epoch: number; holder: string | null }> {
  const [epoch, holder] = await Promise.all([metadata.get(refs.epoch(volume)), metadata.get(refs.epochHolder(volume))]);
  const current = epoch?.value ?? 0;
  // A holder record of another epoch (written by an engine from before holders were kept) names nobody.
  return { epoch: current, holder: holder?.value.epoch === current ? holder.value.nodeId : null };
}
