import { isKeelsonError } from "@keelson/sdk";
import { describe, expect, it } from "vitest";
import { refs } from "../metadata/keys.js";
import { MemoryMetadataStore } from "../metadata/memory-store.js";
import { currentEpoch, epochAndHolder, nextEpoch, supersededError } from "./epochs.js";

describe("epochs", () => {
  it("24 attachers racing get distinct, gap-free epochs; a volume never attached is at 0", async () => {
    const s = new MemoryMetadataStore();
    const got = (await Promise.all(Array.from({ length: 24 }, () => nextEpoch(s, "vol", "n1")))).sort((a, b) => a - b);
    expect(got).toEqual(Array.from({ length: 24 }, (_, i) => i + 1));
    expect(await currentEpoch(s, "vol")).toBe(24);
    expect(await currentEpoch(s, "other")).toBe(0);
  });

  it("a write guarded by a superseded epoch is EPOCH_STALE; by the current one, retryable (null)", async () => {
    const s = new MemoryMetadataStore();
    await nextEpoch(s, "vol", "n1");
    await nextEpoch(s, "vol", "n2");
    expect(await supersededError(s, "vol", 2)).toBeNull();
    const stale = await supersededError(s, "vol", 1);
    expect(isKeelsonError(stale, "EPOCH_STALE")).toBe(true);
    expect(stale?.message).toBe("volume vol: epoch 1 was superseded by 2");
  });

  it("the node that took the current epoch is recorded with it; a holder of another epoch names nobody", async () => {
    const s = new MemoryMetadataStore();
    expect(await epochAndHolder(s, "vol")).toEqual({ epoch: 0, holder: null });
    const taken = await Promise.all(["n1", "n2", "n3"].map(async (n) => ({ n, epoch: await nextEpoch(s, "vol", n) })));
    const last = taken.find((t) => t.epoch === 3);
    expect(await epochAndHolder(s, "vol")).toEqual({ epoch: 3, holder: last?.n });
    // An epoch taken by an engine that did not write holders: the old holder must not count for it.
    await s.put(refs.epoch("vol"), 4);
    expect(await epochAndHolder(s, "vol")).toEqual({ epoch: 4, holder: null });
  });

  it("a corrupt epoch record is METADATA_CORRUPT, not epoch 0", async () => {
    const s = new MemoryMetadataStore();
    s.putRaw(refs.epoch("vol"), '"three"');
    await expect(currentEpoch(s, "vol")).rejects.toThrow(/METADATA_CORRUPT|epochs\/vol is malformed/);
  });
});
