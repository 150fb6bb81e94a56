import { KeelsonError } from "@keelson/sdk";
import type { DiskCapabilityRecord } from "./catalog.js";
import { ioError } from "./io-completion.js";
import type { Layer } from "./layer.js";
import type { PoolCore } from "./pool-core.js";
import { hostFreeBytes } from "./pool-device.js";
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
  // Free blocks inside slabs count as free: a write of a few blocks takes them (sub-extent allocation).
  const freeBytes = core.allocator.freeCount * core.layout.extentSizeBytes + core.blocks.freeBlocks * core.layout.blockSizeBytes;
  return { totalBytes, freeBytes, allocatedBytes: totalBytes - freeBytes };
}

/** Pool bytes held by one layer alone (a volume's head, a snapshot's layer). */
export function layerBytesOf(core: PoolCore, layer: Layer): number {
  return layer.allocatedExtents * core.layout.extentSizeBytes + layer.allocatedBlocks * core.layout.blockSizeBytes;
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

/**
 * Share of the host filesystem's free space a scratch region on a file pool
 * may take. Writes to free extents of a sparse pool file allocate host space
 * that stays allocated (nothing punches holes), so a 64 MiB calibration on a
 * nearly full host filesystem would fill it and fail the daemon's start.
 */
const SCRATCH_HOST_SHARE = 0.5;

/** Extents a scratch region may take: `maxBytes` worth, and on a file pool no more than its share of the host's free space. */
function scratchExtents(core: PoolCore, maxBytes: number): number {
  const extentBytes = core.layout.extentSizeBytes;
  const wanted = Math.max(1, Math.floor(maxBytes / extentBytes));
  const hostFree = hostFreeBytes(core.device);
  if (hostFree === null) return wanted;
  const allowed = Math.floor((hostFree * SCRATCH_HOST_SHARE) / extentBytes);
  if (allowed > 0) return Math.min(wanted, allowed);
  throw new KeelsonError({
    code: "NO_SPACE",
    message: `the host filesystem of pool ${core.device.path} has ${hostFree} bytes free: too little for a scratch region of one ${extentBytes}-byte extent (at most ${SCRATCH_HOST_SHARE * 100}% of its free space is used)`,
  });
}

/** See `Pool.withScratch`. */
export async function lendScratch<T>(core: PoolCore, maxBytes: number, use: (region: ScratchRegion) => Promise<T>): Promise<T> {
  const taken = takeRun(core, scratchExtents(core, maxBytes));
  if (taken.length === 0) throw new KeelsonError({ code: "NO_SPACE", message: "no free extent to calibrate the disk on" });
  try {
    const offset = core.layout.dataOffset + (taken[0] as number) * core.layout.extentSizeBytes;
    const bytes = taken.length * core.layout.extentSizeBytes;
    return await use({ path: core.device.path, fd: core.device.fd, io: core.device.io, offset, bytes });
  } catch (error) {
    // Another writer may fill the host filesystem meanwhile: that is a typed NO_SPACE, not a bare errno.
    const code = (error as NodeJS.ErrnoException).code;
    if (code === "ENOSPC" || code === "EDQUOT") throw ioError(error as NodeJS.ErrnoException, "scratch write");
    throw error;
  } finally {
    for (const phys of taken) core.allocator.release(phys);
    await core.flush();
  }
}
