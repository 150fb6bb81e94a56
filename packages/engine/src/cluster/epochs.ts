import { KeelsonError } from "@keelson/sdk";
import type { Etcd3 } from "etcd3";
import { KEY_PREFIX } from "./membership.js";

const EPOCHS = `${KEY_PREFIX}/epochs/`;
/** Compare-and-swap attempts before giving up under contention. */
const MAX_EPOCH_ATTEMPTS = 32;

/**
 * Takes the next attachment epoch of a volume from etcd: a compare-and-swap
 * on the volume's epoch key, so two attachers racing never get the same epoch
 * and every epoch is larger than all before it.
 */
export async function nextEpoch(client: Etcd3, volume: string): Promise<number> {
  const key = epochKey(volume);
  for (let attempt = 0; attempt < MAX_EPOCH_ATTEMPTS; attempt++) {
    const current = await client.get(key).string();
    const next = (current === null ? 0 : Number(current)) + 1;
    const txn =
      current === null
        ? client.if(key, "Create", "==", 0).then(client.put(key).value(String(next)))
        : client.if(key, "Value", "==", current).then(client.put(key).value(String(next)));
    const result = await txn.commit();
    if (result.succeeded) return next;
  }
  throw new KeelsonError({
    code: "UNAVAILABLE",
    message: `epoch of volume ${volume} is contended: no compare-and-swap won in ${MAX_EPOCH_ATTEMPTS} attempts`,
  });
}

/** etcd key of the volume's epoch: writes made "only while epoch E is current" compare its value. */
export function epochKey(volume: string): string {
  return `${EPOCHS}${volume}`;
}

/**
 * After a write guarded by `epoch` failed: EPOCH_STALE when a newer epoch
 * exists (the writer was fenced), null when the epoch still holds (another
 * compare in the same transaction failed; the caller may try again).
 */
export async function supersededError(client: Etcd3, volume: string, epoch: number): Promise<KeelsonError | null> {
  const current = await client.get(epochKey(volume)).string();
  if (current === String(epoch)) return null;
  return new KeelsonError({ code: "EPOCH_STALE", message: `volume ${volume}: epoch ${epoch} was superseded by ${current}` });
}

/** The volume's current attachment epoch (0 when never attached). */
export async function currentEpoch(client: Etcd3, volume: string): Promise<number> {
  const v = await client.get(epochKey(volume)).string();
  return v === null ? 0 : Number(v);
}
