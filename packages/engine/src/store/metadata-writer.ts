import { KeelsonError } from "@keelson/sdk";
import createDebug from "debug";
import type { DeviceIo } from "../device-io/device-io.js";
import { fdatasync, writeAll } from "../device-io/device-io-promises.js";
import { messageOf } from "../util/errors.js";
import type { CatalogChange, CatalogSnapshot, EntryRecord } from "./catalog.js";
import type { PoolLayout } from "./layout.js";
import { encodeBatch, encodeCheckpoint, metadataSalt } from "./metadata-log.js";

const debug = createDebug("keelson:store");

/** Space freed before a commit began: allocatable again once the commit is durable. */
export interface Quarantine {
  extents: number[];
  /** Physical blocks (sub-extent allocation). */
  blocks: number[];
}

/** What a commit takes from the store at the moment it starts. */
export interface PendingMetadata {
  changes: CatalogChange[];
  entries: EntryRecord[];
  quarantine: Quarantine;
}

/** The store as the writer sees it. */
export interface MetadataSource {
  takePending(): PendingMetadata;
  restorePending(pending: PendingMetadata): void;
  snapshot(): { catalog: CatalogSnapshot; entries: EntryRecord[] };
  reclaim(quarantine: Quarantine): void;
}

/** Where the journal stands after recovery. */
export interface JournalPosition {
  nextSeq: number;
  tailBytes: number;
  /** Slot of the checkpoint the journal continues (the next checkpoint goes to the other). */
  activeSlot: 0 | 1;
}

/**
 * Makes the store durable: group commit of journal batches, each behind a
 * data barrier, and a checkpoint when the journal is full. A failed fsync
 * poisons the writer: after it nothing is known about what reached the disk,
 * so every later commit fails instead of pretending.
 */
export class MetadataWriter {
  readonly #deviceIo: DeviceIo;
  readonly #fd: number;
  readonly #layout: PoolLayout;
  readonly #source: MetadataSource;
  readonly #salt: number;
  #position: JournalPosition;
  #inflight: Promise<void> | null = null;
  #queued: Promise<void> | null = null;
  /** Set when an fsync failed; every later commit rejects with it. */
  #failure: KeelsonError | null = null;

  constructor(io: DeviceIo, fd: number, layout: PoolLayout, source: MetadataSource, position: JournalPosition) {
    this.#deviceIo = io;
    this.#fd = fd;
    this.#layout = layout;
    this.#source = source;
    this.#salt = metadataSalt(layout.uid);
    this.#position = { ...position };
  }

  get failure(): KeelsonError | null {
    return this.#failure;
  }

  /**
   * Makes every change and every completed write before this call durable.
   * Calls that arrive while a commit runs share the next one.
   */
  commit(): Promise<void> {
    if (this.#queued) return this.#queued;
    if (this.#inflight) {
      this.#queued = this.#inflight
        .catch(() => undefined)
        .then(() => {
          this.#queued = null;
          return this.#start(false);
        });
      return this.#queued;
    }
    return this.#start(false);
  }

  /** Writes a checkpoint now (clean shutdown), so the next start replays nothing. */
  async checkpoint(): Promise<void> {
    await (this.#queued ?? this.#inflight)?.catch(() => undefined);
    await this.#start(true);
  }

  #start(forceCheckpoint: boolean): Promise<void> {
    const run = this.#commitOnce(forceCheckpoint).finally(() => {
      if (this.#inflight === run) this.#inflight = null;
    });
    this.#inflight = run;
    return run;
  }

  async #commitOnce(forceCheckpoint: boolean): Promise<void> {
    if (this.#failure) throw this.#failure;
    const pending = this.#source.takePending();
    const empty = pending.changes.length === 0 && pending.entries.length === 0;
    try {
      if (empty && !forceCheckpoint) {
        await this.#sync();
      } else {
        await this.#persist(pending, forceCheckpoint);
      }
    } catch (error) {
      this.#source.restorePending(pending);
      throw error;
    }
    this.#source.reclaim(pending.quarantine);
  }

  async #persist(pending: PendingMetadata, forceCheckpoint: boolean): Promise<void> {
    const seq = this.#position.nextSeq;
    const batch = forceCheckpoint ? null : encodeBatch(seq, pending.changes, pending.entries, this.#salt);
    const fits = batch !== null && this.#position.tailBytes + batch.length <= this.#layout.journalBytes;
    // Encode a checkpoint now, synchronously, so it shows exactly the state the pending records led to.
    const checkpoint = fits ? null : this.#encodeCheckpoint(seq);
    // Data barrier: mappings must not become durable before the data they point at.
    await this.#sync();
    if (batch && fits) {
      await this.#io(() =>
        writeAll(this.#deviceIo, this.#fd, batch, this.#layout.journalOffset + this.#position.tailBytes, "metadata write"),
      );
      await this.#sync();
      this.#position = { ...this.#position, nextSeq: seq + 1, tailBytes: this.#position.tailBytes + batch.length };
      return;
    }
    const slot: 0 | 1 = this.#position.activeSlot === 0 ? 1 : 0;
    await this.#io(() =>
      writeAll(this.#deviceIo, this.#fd, checkpoint as Buffer, this.#layout.slotOffsets[slot], "metadata write"),
    );
    await this.#sync();
    debug("checkpoint seq=%d slot=%d bytes=%d", seq, slot, (checkpoint as Buffer).length);
    this.#position = { nextSeq: seq + 1, tailBytes: 0, activeSlot: slot };
  }

  #encodeCheckpoint(seq: number): Buffer {
    const { catalog, entries } = this.#source.snapshot();
    const buf = encodeCheckpoint(seq, catalog, entries, this.#salt);
    if (buf.length > this.#layout.slotBytes) {
      throw new KeelsonError({
        code: "NO_SPACE",
        message: `metadata checkpoint of ${buf.length} bytes exceeds its slot of ${this.#layout.slotBytes} bytes`,
      });
    }
    return buf;
  }

  async #io(op: () => Promise<void>): Promise<void> {
    try {
      await op();
    } catch (error) {
      const code = (error as NodeJS.ErrnoException).code === "ENOSPC" ? "NO_SPACE" : "INTERNAL";
      throw new KeelsonError({ code, message: `metadata write failed: ${messageOf(error)}`, cause: error });
    }
  }

  async #sync(): Promise<void> {
    try {
      await fdatasync(this.#deviceIo, this.#fd);
    } catch (error) {
      this.#failure = new KeelsonError({
        code: "INTERNAL",
        message: `fdatasync of the pool failed (${messageOf(error)}); the pool is failed until restart`,
        cause: error,
      });
      throw this.#failure;
    }
  }
}
