/**
 * A reservation tag due within this long counts as due now: a reserved
 * volume's burst (its queue depth, sent at once) runs ahead of its rate by
 * this much, and no more.
 */
export const RESERVATION_EARLY_MS = 2;

/**
 * One volume as an mClock scheduler sees it (Gulati et al., OSDI 2010): its
 * floor, its share, its waiting work and its tags. The disk scheduler and
 * the front scheduler each keep one per volume, with the same policy.
 *
 * Tags follow mClock: a reservation tag per request, spaced 1/reservation
 * apart in real time, moved only by requests started for the reservation
 * (what a volume gets by share on top does not push its floor into the
 * future); a share tag spaced 1/weight apart in virtual time, which a
 * request started for the reservation gives back (the floor does not use up
 * the volume's share of the rest), and which an idle volume restarts from
 * the scheduler's virtual time rather than from its own old tags.
 */
export class SchedulerClient<W = unknown> {
  /** Guaranteed IOPS while its server is saturated (0: none). */
  reservationIops: number;
  weight: number;
  /** Waiting work, oldest first, each with the share tag it got when it queued. */
  readonly queue: Array<{ io: W; p: number }> = [];
  /** The last reservation tag used and the last share tag given (ms; the share tag in virtual time). */
  lastR = Number.NEGATIVE_INFINITY;
  lastP = Number.NEGATIVE_INFINITY;
  /** Work started for the reservation and by share (for tests and metrics). */
  servedByReservation = 0;
  servedByWeight = 0;
  /** Requests the front started for it, and of those how many had another of their connection received behind, since the front last looked at reservations kept (FrontScheduler). */
  frontStarted = 0;
  frontBacklogged = 0;

  constructor(reservationIops: number, weight: number) {
    this.reservationIops = reservationIops;
    this.weight = weight;
  }

  /** The reservation tag its next request would take now, when it is due (within the early slack); else null. */
  dueReservationTag(now: number): number | null {
    if (this.reservationIops <= 0) return null;
    const r = Math.max(this.lastR + 1000 / this.reservationIops, now);
    return r <= now + RESERVATION_EARLY_MS ? r : null;
  }

  /** Gives its next request a share tag, from its last one or from the scheduler's virtual time, whichever is later. */
  takeShareTag(virtualP: number): number {
    this.lastP = Math.max(this.lastP + 1000 / this.weight, virtualP);
    return this.lastP;
  }

  /**
   * A request started for the reservation at tag `r`; `gaveShareTag` when it had taken a share tag (it
   * queued), which goes back. Given back from the volume's last tag, so it is the volume's next request
   * that starts earlier, not the ones still waiting (whose tags stay as they were): mClock lowers theirs,
   * which costs a pass over the queue per start; the difference is one tag's spacing.
   */
  startedForReservation(r: number, gaveShareTag: boolean): void {
    this.lastR = r;
    if (gaveShareTag) this.lastP -= 1000 / this.weight;
    this.servedByReservation++;
  }

  /** A new policy: tags laid under the old one would hold the new one back, or let it run ahead. */
  reset(reservationIops: number, weight: number): void {
    this.reservationIops = reservationIops;
    this.weight = weight;
    this.lastR = Number.NEGATIVE_INFINITY;
  }
}
