import { KeelsonError } from "@keelson/sdk";
import type { DiskCapabilityRecord } from "./catalog.js";
import type { Layer } from "./layer.js";
import type { PoolCore } from "./pool-core.js";
import type { ScratchRegion } from "./scratch.js";

// Space of the pool and its disk: what is allocated, what a layer holds, the
// disk's recorded capability and scratch regions lent out of free extents.

/** Space of a pool, in bytes. */
export interface PoolSpace {
  totalBytes: number;
  allocatedBytes: number;
  freeBytes: number;
}

export function spaceOf(core: PoolCore): PoolSpace {
  const totalBytes = core.layout.extentCount * core.layout.extentSizeBytes;
  const freeBytes = core.allocator.freeCount * core.layout.extentSizeBytes;
  return { totalBytes, freeBytes, allocatedBytes: totalBytes - freeBytes };
}

/** Pool bytes held by one layer alone (a volume's head, a snapshot's layer). */
export function layerBytesOf(core: PoolCore, layer: Layer): number {
  return layer.allocatedExtents * core.layout.extentSizeBytes;
}

/** See `Pool.setDiskCapability`. */
export async function setDiskCapability(core: PoolCore, disk: DiskCapabilityRecord): Promise<void> {
  core.disk = disk;
  core.record({ op: "putDisk", disk });
  await core.flush();
}

/** Takes the longest run of consecutive free extents from the top of the free stack, up to `wanted`. */
function takeRun(core: PoolCore, wanted: number): number[] {
  const taken: number[] = [];
  for (let i = 0; i < wanted; i++) {
    const phys = core.allocator.allocate();
    if (phys < 0 || (taken.length > 0 && phys !== (taken[taken.length - 1] as number) + 1)) {
      if (phys >= 0) core.allocator.release(phys);
      break;
    }
    taken.push(phys);
  }
  return taken;
}

/** See `Pool.withScratch`. */
export async function lendScratch<T>(core: PoolCore, maxBytes: number, use: (region: ScratchRegion) => Promise<T>): Promise<T> {
  const taken = takeRun(core, Math.max(1, Math.floor(maxBytes / core.layout.extentSizeBytes)));
  if (taken.length === 0) throw new KeelsonError({ code: "NO_SPACE", message: "no free extent to calibrate the disk on" });
  try {
    const offset = core.layout.dataOffset + (taken[0] as number) * core.layout.extentSizeBytes;
    return await use({ fd: core.device.fd, offset, bytes: taken.length * core.layout.extentSizeBytes });
  } finally {
    for (const phys of taken) core.allocator.release(phys);
    await core.flush();
  }
}
