import { KeelsonError } from "@keelson/sdk";
import { eventOf } from "./events.js";
import { keyOf, kindPrefix, type RecordKind, type RecordRef, refs } from "./keys.js";
import { decodeRecord, encodeRecord, type RecordTypes } from "./records.js";
import type {
  Condition,
  MetadataStore,
  MetadataWatch,
  Registration,
  RegistrationHandlers,
  Transaction,
  Version,
  Versioned,
  WatchCursor,
  WatchHandlers,
} from "./store.js";

/**
 * {@link MetadataStore} in one process's memory, with the same semantics as
 * the etcd one (records stored encoded and validated when read, versions,
 * transactions, a revision per write). For unit tests of what sits on the
 * store, and the shape an embedded single-node store would take. Not durable;
 * leases never expire and the first registered node leads.
 */
export class MemoryMetadataStore implements MetadataStore {
  readonly endpoints = "memory";
  /** Stored values by key. */
  readonly #data = new Map<string, string>();
  #revision = 1;
  readonly #watches = new Set<WatchHandlers>();
  #leader: string | undefined;

  /** Stores a raw value (tests use it to plant a corrupt record). */
  putRaw(ref: RecordRef, stored: string): void {
    this.#write(keyOf(ref), stored);
  }

  async get<K extends RecordKind>(ref: RecordRef<K>): Promise<Versioned<K> | null> {
    const stored = this.#data.get(keyOf(ref));
    return stored === undefined ? null : { ref, value: decodeRecord(ref, stored), version: stored as Version };
  }

  async list<K extends RecordKind>(kind: K, idPrefix = ""): Promise<Versioned<K>[]> {
    const prefix = kindPrefix(kind);
    return [...this.#data.entries()]
      .filter(([key]) => key.startsWith(`${prefix}${idPrefix}`))
      .sort(([a], [b]) => (a < b ? -1 : 1))
      .map(([key, stored]) => {
        const ref: RecordRef<K> = { kind, id: key.slice(prefix.length) };
        return { ref, value: decodeRecord(ref, stored), version: stored as Version };
      });
  }

  async put<K extends RecordKind>(ref: RecordRef<K>, value: RecordTypes[K]): Promise<void> {
    this.#write(keyOf(ref), encodeRecord(ref.kind, value));
  }

  async delete(ref: RecordRef): Promise<void> {
    this.#write(keyOf(ref), null);
  }

  async commit(txn: Transaction): Promise<boolean> {
    if (!txn.if.every((c) => this.#holds(c))) return false;
    for (const p of txn.put ?? []) this.#write(keyOf(p.ref), encodeRecord(p.ref.kind, p.value));
    for (const ref of txn.delete ?? []) this.#write(keyOf(ref), null);
    return true;
  }

  #holds(c: Condition): boolean {
    const stored = this.#data.get(keyOf(c.ref));
    if ("equals" in c) return stored === encodeRecord("epoch", c.equals);
    return c.version === null ? stored === undefined : stored === c.version;
  }

  #write(key: string, stored: string | null): void {
    if (stored === null && !this.#data.has(key)) return;
    if (stored === null) this.#data.delete(key);
    else this.#data.set(key, stored);
    this.#revision++;
    const event = eventOf({ key, value: stored ?? "", deleted: stored === null });
    if (event) for (const w of this.#watches) w.event({ revision: this.#revision, index: 0, event });
  }

  async register(nodeId: string, _ttlS: number, on: RegistrationHandlers): Promise<Registration> {
    await this.put(refs.alive(nodeId), Date.now());
    if (this.#leader === undefined) {
      this.#leader = nodeId;
      on.elected();
    }
    return {
      release: async () => {
        if (this.#leader === nodeId) this.#leader = undefined;
        await this.delete(refs.alive(nodeId));
      },
    };
  }

  async leader(): Promise<string | undefined> {
    return this.#leader;
  }

  async headRevision(): Promise<number> {
    return this.#revision;
  }

  /** Reports changes from now on only: this store keeps no history (a cursor in the past is WATCH_COMPACTED). */
  async watch(after: WatchCursor, on: WatchHandlers): Promise<MetadataWatch> {
    if (after.revision < this.#revision) {
      on.error(
        new KeelsonError({ code: "WATCH_COMPACTED", message: `the memory store keeps no history before ${this.#revision}` }),
      );
      return { cancel: async () => undefined };
    }
    this.#watches.add(on);
    return { cancel: async () => void this.#watches.delete(on) };
  }

  close(): void {
    this.#watches.clear();
  }
}
