import { KeelsonError } from "@keelson/sdk";
import type { DiskCapabilityRecord } from "../store/catalog.js";
import type { ReservationRequest, Reservations } from "../store/reservations.js";

/** What a disk can do, measured by calibration or set by the operator (stored in the pool's catalog). */
export type DiskCapability = DiskCapabilityRecord;

export const DEFAULT_HEADROOM = 0.1;

/** Reservations on one disk, summed over its volumes. */
export type Reserved = Reservations;

/** What is still free for reservations on a disk. */
export function freeForReservations(cap: DiskCapability, reserved: Reserved): Reserved {
  return {
    iops: Math.max(0, Math.floor(cap.iops * (1 - cap.headroom) - reserved.iops)),
    bytesPerSec: Math.max(0, Math.floor(cap.bytesPerSec * (1 - cap.headroom) - reserved.bytesPerSec)),
  };
}

/**
 * Admits a reservation on a disk, or throws QOS_ADMISSION_DENIED saying what
 * is free where. `reserved` excludes the volume being (re)admitted.
 */
export function admit(disk: string, cap: DiskCapability | undefined, reserved: Reserved, want: Reserved): void {
  if (want.iops === 0 && want.bytesPerSec === 0) return;
  if (!cap) {
    throw new KeelsonError({
      code: "QOS_ADMISSION_DENIED",
      message: `disk ${disk} has no measured capability yet; reservations cannot be admitted until it is calibrated or set`,
    });
  }
  const free = freeForReservations(cap, reserved);
  if (want.iops <= free.iops && want.bytesPerSec <= free.bytesPerSec) return;
  throw new KeelsonError({
    code: "QOS_ADMISSION_DENIED",
    message:
      `cannot reserve ${want.iops} IOPS and ${want.bytesPerSec} B/s: disk ${disk} (capability ${cap.iops} IOPS, ` +
      `${cap.bytesPerSec} B/s, ${Math.round(cap.headroom * 100)}% headroom) has ${reserved.iops} IOPS and ` +
      `${reserved.bytesPerSec} B/s reserved, ${free.iops} IOPS and ${free.bytesPerSec} B/s free`,
  });
}

/** The pool's admission hook (`Pool.open({ admit: admitReservation })`): {@link admit} applied to one request. */
export function admitReservation(request: ReservationRequest): void {
  admit(request.diskPath, request.disk, request.reserved, request.wanted);
}
