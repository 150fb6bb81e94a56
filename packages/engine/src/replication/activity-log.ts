import { regionsOf } from "./region-map.js";

/** Unit of the activity log: a write to an extent not in the log waits for one save on the replicas. */
export const ACTIVITY_EXTENT_BYTES = 4 * 1024 * 1024;
/** An extent with no write in flight leaves the log after this long without one. */
export const ACTIVITY_IDLE_MS = 2_000;

/** What the log holds: the extents that may differ between replicas, or all of them. */
export type ActivityExtents = readonly number[] | "all";

/** An activity log as a replica keeps it: what a frontend reads of it. */
export interface KeptActivityLog {
  extentBytes: number;
  all: boolean;
  extents: readonly number[];
}

/** Where the log is kept: on every replica that takes writes, under the attachment's epoch. */
export type SaveActivity = (extents: ActivityExtents) => Promise<void>;

/**
 * The frontend's write-intent log. A frontend that dies with writes in
 * flight may leave them on some replicas and not others, all still "in
 * sync"; the next frontend must make those regions equal before it serves
 * reads from more than one replica. So every extent is recorded here before
 * a write to it is sent, and leaves only once no write has been in flight in
 * it for a while: after a failover only the extents in the log are resynced,
 * not the whole volume. Writes to extents already in the log (the usual
 * case) do not wait.
 *
 * Extents can be pinned: those a resync has still to make equal stay in the
 * log until it is done, so a frontend lost mid-resync hands them on.
 */
export class ActivityLog {
  readonly #save: SaveActivity;
  readonly #extentBytes: number;
  readonly #idleMs: number;
  /** Writes in flight per extent. */
  readonly #inflight = new Map<number, number>();
  /** When the last write to an extent ended (or began, while one is in flight). */
  readonly #lastUse = new Map<number, number>();
  /** What the log should hold. */
  readonly #wanted = new Set<number>();
  /** Extents a completed save put in the log and no save since has taken out. */
  readonly #durable = new Set<number>();
  #pinned: Set<number> | "all" | null = null;
  #current: Promise<void> = Promise.resolve();
  #next: Promise<void> | null = null;
  /** A save is owed: an extent left the log, or the last save failed. */
  #stale = false;
  #sweeper: NodeJS.Timeout | null = null;

  constructor(save: SaveActivity, extentBytes = ACTIVITY_EXTENT_BYTES, idleMs = ACTIVITY_IDLE_MS) {
    this.#save = save;
    this.#extentBytes = extentBytes;
    this.#idleMs = idleMs;
  }

  /** Extents the log holds now (as last saved), for status and tests. */
  get size(): number {
    return this.#durable.size;
  }

  /**
   * Writes the first log of this attachment, holding `pinned` (the extents a
   * resync must still make equal, "all" when unknown), and starts dropping
   * idle extents. Rejects when the log cannot be saved.
   */
  async start(pinned: ActivityExtents | null): Promise<void> {
    this.#pinned = pinned === "all" ? "all" : pinned ? new Set(pinned) : null;
    await this.#saveSoon();
    this.#sweeper = setInterval(() => this.#sweep(), Math.max(50, this.#idleMs / 2));
    this.#sweeper.unref();
  }

  /** Releases the pinned extents (the resync is done); the next save leaves them out. */
  unpin(): void {
    if (this.#pinned === null) return;
    this.#pinned = null;
    this.#stale = true;
  }

  /**
   * Enters a write of `[offset, offset + length)`: returns its leave
   * function, at once when its extents are in the log already, else once a
   * save put them there (rejecting when it failed).
   */
  enter(offset: number, length: number): (() => void) | Promise<() => void> {
    const { first, last } = regionsOf(offset, length, this.#extentBytes);
    const now = Date.now();
    let missing = false;
    for (let e = first; e <= last; e++) {
      this.#inflight.set(e, (this.#inflight.get(e) ?? 0) + 1);
      this.#lastUse.set(e, now);
      if (!this.#wanted.has(e)) this.#wanted.add(e);
      if (!this.#durable.has(e)) missing = true;
    }
    const leave = (): void => this.#leave(first, last);
    if (!missing || this.#pinned === "all") return leave;
    return this.#saveSoon().then(
      () => leave,
      (error: unknown) => {
        leave();
        throw error;
      },
    );
  }

  #leave(first: number, last: number): void {
    const now = Date.now();
    for (let e = first; e <= last; e++) {
      const n = (this.#inflight.get(e) ?? 1) - 1;
      if (n === 0) this.#inflight.delete(e);
      else this.#inflight.set(e, n);
      this.#lastUse.set(e, now);
    }
  }

  /** Takes out extents idle for long enough; saves when anything changed or a save is owed. */
  #sweep(): void {
    const now = Date.now();
    for (const e of this.#wanted) {
      if (this.#inflight.has(e)) continue;
      if (now - (this.#lastUse.get(e) ?? 0) < this.#idleMs) continue;
      this.#wanted.delete(e);
      this.#lastUse.delete(e);
      // Not durable from now on: a write to it waits for a save that puts it back.
      this.#durable.delete(e);
      this.#stale = true;
    }
    if (this.#stale) this.#saveSoon().catch(() => undefined);
  }

  /**
   * A save that starts after every change made so far: the one queued behind
   * the save in progress (joined by everyone who asks meanwhile), or a new one.
   */
  #saveSoon(): Promise<void> {
    if (this.#next) return this.#next;
    const next = this.#current
      .catch(() => undefined)
      .then(async () => {
        this.#next = null;
        this.#stale = false;
        const content = this.#content();
        try {
          await this.#save(content);
        } catch (error) {
          this.#stale = true;
          throw error;
        }
        if (content !== "all") {
          this.#durable.clear();
          for (const e of content) if (this.#wanted.has(e)) this.#durable.add(e);
        }
      });
    this.#next = next;
    this.#current = next;
    return next;
  }

  #content(): ActivityExtents {
    if (this.#pinned === "all") return "all";
    const all = new Set(this.#wanted);
    if (this.#pinned) for (const e of this.#pinned) all.add(e);
    return [...all].sort((a, b) => a - b);
  }

  /**
   * Empties the log (the frontend is detaching with every in-sync replica
   * equal and no write in flight); rejects when it cannot be saved.
   */
  async clear(): Promise<void> {
    this.#wanted.clear();
    this.#durable.clear();
    this.#lastUse.clear();
    this.#pinned = null;
    await this.#saveSoon();
  }

  /**
   * A save of what the log holds now, started after every change so far: a
   * replica that joins the writes (rebuilt) gets the log before it counts as
   * holding it.
   */
  saveNow(): Promise<void> {
    return this.#saveSoon();
  }

  /** Stops dropping extents; the log stays as last saved (a later attachment reads it). */
  close(): void {
    if (this.#sweeper) clearInterval(this.#sweeper);
    this.#sweeper = null;
  }
}
