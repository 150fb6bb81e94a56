import type { DiskCapabilityRecord, QosPolicyRecord, VolumeRecord } from "./catalog.js";

/** Reserved rates, summed over a disk's volumes or wanted by one. */
export interface Reservations {
  iops: number;
  bytesPerSec: number;
}

/** One admission question: may a volume reserve `wanted` on this disk? */
export interface ReservationRequest {
  /** The pool's device path (named in the refusal). */
  diskPath: string;
  /** What the disk can do; undefined until it is calibrated or set. */
  disk: DiskCapabilityRecord | undefined;
  /** Reservations already admitted on the disk, leaving out the volume asking. */
  reserved: Reservations;
  /** The volume's reservation (zero when it has no QoS policy). */
  wanted: Reservations;
}

/**
 * Judges a reservation before the pool stores a volume's QoS policy (at
 * create and at a policy change); throws a `KeelsonError` to refuse. It runs
 * under the pool's control lock, so no other create or change can slip in
 * between the judgement and the commit. The store itself judges nothing:
 * `qos/` provides the rule (`admitReservation`).
 */
export type AdmitReservation = (request: ReservationRequest) => void;

/** An admission rule that accepts every reservation (store tests, tools that schedule no I/O). */
export const acceptEveryReservation: AdmitReservation = () => undefined;

/** The reservation a policy asks for; none when there is no policy. */
export function reservationOf(qos: QosPolicyRecord | undefined): Reservations {
  return { iops: qos?.reservationIops ?? 0, bytesPerSec: qos?.reservationBytesPerSec ?? 0 };
}

/** Reservations of `volumes`, summed, leaving out the volume `exceptUid`. */
export function sumReservations(volumes: Iterable<VolumeRecord>, exceptUid?: string): Reservations {
  const sum: Reservations = { iops: 0, bytesPerSec: 0 };
  for (const v of volumes) {
    if (v.uid === exceptUid || !v.qos) continue;
    sum.iops += v.qos.reservationIops;
    sum.bytesPerSec += v.qos.reservationBytesPerSec;
  }
  return sum;
}
