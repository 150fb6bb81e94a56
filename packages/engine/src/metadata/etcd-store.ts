import assert from "node:assert";
import { KeelsonError } from "@keelson/sdk";
import { handleWhen, noop, retry } from "cockatiel";
import {
  type ComparatorBuilder,
  Etcd3,
  GRPCDeadlineExceededError,
  type IWatchResponse,
  isRecoverableError,
  type Lease,
} from "etcd3";
import { messageOf } from "../util/errors.js";
import { eventOf } from "./events.js";
import { KEY_PREFIX, keyOf, kindPrefix, LEADER_ELECTION, type RecordKind, type RecordRef, refs } from "./keys.js";
import { decodeRecord, encodeRecord, type RecordTypes } from "./records.js";
import {
  ALL_OF_REVISION,
  type Condition,
  type MetadataStore,
  type MetadataWatch,
  type Registration,
  type RegistrationHandlers,
  type Transaction,
  type Version,
  type Versioned,
  type WatchCursor,
  type WatchHandlers,
} from "./store.js";

/** How long connecting to etcd may take before a call fails. */
const DIAL_TIMEOUT_MS = 3000;

/**
 * A failure of an etcd client call as a KeelsonError: etcd away (restarting,
 * cut off, the client's circuit breaker open) is UNAVAILABLE, since the call
 * may succeed later. Every error the client throws counts: its classes
 * (GRPCGenericError, ClientRuntimeError, the circuit breaker's errors, ...)
 * stop here. A KeelsonError is passed on unchanged.
 */
export function fromEtcdError(error: unknown): KeelsonError {
  if (error instanceof KeelsonError) return error;
  const message = messageOf(error);
  return new KeelsonError({ code: "UNAVAILABLE", message: `etcd: ${message}`, cause: error });
}

/**
 * Longest one attempt of a unary etcd call may take before it fails (UNAVAILABLE). Not shorter: on a
 * loaded 2-core CI machine a node's first call, which waits for the connection, took over 4 s.
 */
export const ETCD_CALL_DEADLINE_MS = 8_000;

/** Runs one etcd call, converting its failures with {@link fromEtcdError}. */
async function etcd<T>(call: () => Promise<T>): Promise<T> {
  try {
    return await call();
  } catch (error) {
    throw fromEtcdError(error);
  }
}

/** The version token of a stored value: its exact bytes (a compare-and-swap compares the value). */
const versionOf = (stored: string): Version => stored as Version;

/** {@link MetadataStore} on an etcd cluster (v3 API), with the key layout of keys.ts. */
export class EtcdMetadataStore implements MetadataStore {
  readonly endpoints: string;
  readonly #client: Etcd3;
  #closed = false;

  private constructor(endpoints: string) {
    this.endpoints = endpoints;
    // No per-host circuit breaker: after 3 failures it refused every call for 5 s, so a node came back
    // that long after etcd did. Callers bound and retry their own calls.
    // Every unary call has a deadline: an etcd that stops answering (paused, partitioned after the
    // connection was made) must fail a call, not hang it and everything waiting behind it.
    this.#client = new Etcd3({
      hosts: endpoints.split(","),
      dialTimeout: DIAL_TIMEOUT_MS,
      // One retry of a call that failed for the connection (a stale one after etcd restarted), not
      // the client's three; none of a call that ran out its deadline (etcd did not answer in time,
      // and an immediate second try rarely does better): a call is bounded by ETCD_CALL_DEADLINE_MS.
      faultHandling: {
        host: () => noop,
        global: retry(
          handleWhen((e) => isRecoverableError(e) && !(e instanceof GRPCDeadlineExceededError)),
          { maxAttempts: 1 },
        ),
      },
      defaultCallOptions: (context) => (context.isStream ? {} : { deadline: Date.now() + ETCD_CALL_DEADLINE_MS }),
    });
  }

  /** A store on the etcd at `endpoints` (client URLs, comma-separated). Connects lazily: the first call fails when it cannot. */
  static connect(endpoints: string): EtcdMetadataStore {
    return new EtcdMetadataStore(endpoints);
  }

  async get<K extends RecordKind>(ref: RecordRef<K>): Promise<Versioned<K> | null> {
    const stored = await etcd(() => this.#client.get(keyOf(ref)).string());
    return stored === null ? null : { ref, value: decodeRecord(ref, stored), version: versionOf(stored) };
  }

  async list<K extends RecordKind>(kind: K, idPrefix = ""): Promise<Versioned<K>[]> {
    const prefix = kindPrefix(kind);
    const all = await etcd(() => this.#client.getAll().prefix(`${prefix}${idPrefix}`).strings());
    return Object.entries(all).map(([key, stored]) => {
      const ref: RecordRef<K> = { kind, id: key.slice(prefix.length) };
      return { ref, value: decodeRecord(ref, stored), version: versionOf(stored) };
    });
  }

  async put<K extends RecordKind>(ref: RecordRef<K>, value: RecordTypes[K]): Promise<void> {
    await etcd(() => this.#client.put(keyOf(ref)).value(encodeRecord(ref.kind, value)).exec());
  }

  async delete(ref: RecordRef): Promise<void> {
    await etcd(() => this.#client.delete().key(keyOf(ref)).exec());
  }

  async commit(txn: Transaction): Promise<boolean> {
    const [first, ...rest] = txn.if;
    assert(first, "a transaction needs at least one condition");
    let builder = this.#compare(null, first);
    for (const c of rest) builder = this.#compare(builder, c);
    const ops = [
      ...(txn.put ?? []).map((p) => this.#client.put(keyOf(p.ref)).value(encodeRecord(p.ref.kind, p.value))),
      ...(txn.delete ?? []).map((ref) => this.#client.delete().key(keyOf(ref))),
    ];
    const result = await etcd(() => builder.then(...ops).commit());
    return result.succeeded;
  }

  /** Adds one condition to a transaction (starting it when `builder` is null). */
  #compare(builder: ComparatorBuilder | null, c: Condition): ComparatorBuilder {
    const key = keyOf(c.ref);
    const add = (column: "Value" | "Create", value: string | number): ComparatorBuilder =>
      builder ? builder.and(key, column, "==", value) : this.#client.if(key, column, "==", value);
    if ("equals" in c) return add("Value", encodeRecord("epoch", c.equals));
    return c.version === null ? add("Create", 0) : add("Value", c.version);
  }

  async register(nodeId: string, ttlS: number, on: RegistrationHandlers): Promise<Registration> {
    const lease = this.#client.lease(ttlS, { autoKeepAlive: false });
    try {
      await etcd(() =>
        lease
          .put(keyOf(refs.alive(nodeId)))
          .value(encodeRecord("alive", Date.now()))
          .exec(),
      );
    } catch (error) {
      void lease.revoke().catch(() => undefined);
      throw error;
    }
    const keepalive = keepLeaseAlive(lease, ttlS, on);
    const campaign = this.#client.election(LEADER_ELECTION, ttlS).campaign(nodeId);
    campaign.on("elected", () => on.elected());
    campaign.on("error", (error) => on.campaignFailed(error));
    let released: Promise<void> | null = null;
    return {
      release: () => {
        released ??= (async () => {
          keepalive.stop();
          await campaign.resign().catch(() => undefined);
          await lease.revoke().catch(() => undefined);
        })();
        return released;
      },
    };
  }

  async leader(): Promise<string | undefined> {
    return this.#client
      .election(LEADER_ELECTION)
      .leader()
      .catch(() => undefined);
  }

  async headRevision(): Promise<number> {
    const res = await etcd(() => this.#client.get(`${KEY_PREFIX}/`).exec());
    return Number(res.header.revision);
  }

  async watch(after: WatchCursor, on: WatchHandlers): Promise<MetadataWatch> {
    const startRevision = after.index === ALL_OF_REVISION ? after.revision + 1 : after.revision;
    const watcher = await etcd(() => this.#client.watch().prefix(`${KEY_PREFIX}/`).startRevision(String(startRevision)).create());
    // Each change is numbered within its revision (all keys count, so the numbering is the same on
    // every reconnect); those at or before the cursor are skipped.
    let revision = 0;
    let index = 0;
    watcher.on("data", (res: IWatchResponse) => {
      for (const e of res.events) {
        const rev = Number(e.kv.mod_revision);
        if (rev !== revision) {
          revision = rev;
          index = 0;
        } else index++;
        if (rev < after.revision || (rev === after.revision && index <= after.index)) continue;
        const event = eventOf({ key: e.kv.key.toString(), value: e.kv.value.toString(), deleted: e.type === "Delete" });
        if (event) on.event({ revision: rev, index, event });
      }
    });
    watcher.on("error", (error: Error) => {
      void (async () => {
        // etcd cancels a watch that starts before its compaction point without saying why through
        // this client library: ask for the start revision itself, which then fails the same way.
        const compacted = /compact/i.test(error.message) || (await this.#isCompacted(startRevision));
        on.error(
          new KeelsonError({
            code: compacted ? "WATCH_COMPACTED" : "UNAVAILABLE",
            message: compacted
              ? `etcd no longer keeps the events after revision ${after.revision}: read the current state and watch from now`
              : `etcd watch failed: ${error.message}`,
            cause: error,
          }),
        );
      })();
    });
    return { cancel: () => watcher.cancel().catch(() => undefined) };
  }

  /** True when etcd has compacted its history past `revision` (a read at it fails so). */
  async #isCompacted(revision: number): Promise<boolean> {
    try {
      await this.#client.get(`${KEY_PREFIX}/`).revision(revision).exec();
      return false;
    } catch (error) {
      return /compact/i.test(messageOf(error));
    }
  }

  close(): void {
    if (this.#closed) return;
    this.#closed = true;
    this.#client.close();
  }
}

/**
 * Keeps `lease` alive with one keepalive every third of its TTL, each on a
 * fresh stream with its own deadline, rather than the client's long-lived
 * stream: that stream could go silent for seconds (no reply, no error) while
 * etcd and the node were fine, and the client then reported the lease lost
 * only after twice its TTL. Here a keepalive that does not answer in time is
 * simply replaced by the next; once a whole TTL passed without an answer the
 * lease has expired in etcd, and it is reported lost at once (as it is when
 * etcd answers that it expired).
 */
function keepLeaseAlive(lease: Lease, ttlS: number, on: RegistrationHandlers): { stop(): void } {
  const intervalMs = (ttlS * 1000) / 3;
  let lastOkMs = Date.now();
  let stopped = false;
  let lost = false;
  const loseIt = (error: unknown) => {
    if (stopped || lost) return;
    lost = true;
    clearInterval(timer);
    on.lost(error);
  };
  // keepaliveOnce reports an expired lease through "lost" too (and throws).
  lease.on("lost", loseIt);
  const tick = () => {
    if (stopped || lost) return;
    if (Date.now() - lastOkMs > ttlS * 1000) {
      return loseIt(new KeelsonError({ code: "UNAVAILABLE", message: `no keepalive answered for ${ttlS} s: the lease expired` }));
    }
    // The lease runs from when etcd renewed it, which is no earlier than the send: count from there.
    const sentMs = Date.now();
    // Each may take up to a TTL (a slow etcd still renews); the next one goes out meanwhile.
    lease.keepaliveOnce({ deadline: new Date(sentMs + ttlS * 1000) }).then(
      (res) => {
        if (Number(res.TTL) > 0) lastOkMs = Math.max(lastOkMs, sentMs);
      },
      (error: unknown) => {
        if (!stopped && !lost) on.keepaliveFailed?.(error);
      },
    );
  };
  const timer = setInterval(tick, intervalMs);
  timer.unref();
  tick();
  return {
    stop: () => {
      stopped = true;
      clearInterval(timer);
    },
  };
}
