import assert from "node:assert";
import { KeelsonError } from "@keelson/sdk";
import { handleWhen, noop, retry } from "cockatiel";
import {
  type ComparatorBuilder,
  Etcd3,
  GRPCDeadlineExceededError,
  type IDuplexStream,
  type ILeaseKeepAliveRequest,
  type ILeaseKeepAliveResponse,
  type IWatchResponse,
  isRecoverableError,
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

/**
 * PEM contents for an etcd on TLS: the CA its server certificate chains to, and this client's certificate
 * and key (an etcd run with --client-cert-auth refuses clients without one).
 */
export interface EtcdClientTls {
  caPem: Buffer;
  certPem: Buffer;
  keyPem: Buffer;
}

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

/**
 * An etcd3 client for `endpoints`. No per-host circuit breaker: after 3 failures it refused every call
 * for 5 s, so a node came back that long after etcd did; callers bound and retry their own calls. Every
 * unary call has a deadline: an etcd that stops answering (paused, partitioned after the connection was
 * made) must fail a call, not hang it and everything waiting behind it.
 */
function createClient(endpoints: string, tls?: EtcdClientTls): Etcd3 {
  return new Etcd3({
    hosts: endpoints.split(","),
    ...(tls ? { credentials: { rootCertificate: tls.caPem, certChain: tls.certPem, privateKey: tls.keyPem } } : {}),
    // Each channel gets connections of its own, not ones shared through grpc-js's process-wide pool:
    // the library closes and reopens channels after a failure, and a new channel then starts from a
    // fresh connection instead of one another channel is tearing down.
    grpcOptions: { "grpc.use_local_subchannel_pool": 1 },
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

/** {@link MetadataStore} on an etcd cluster (v3 API), with the key layout of keys.ts. */
export class EtcdMetadataStore implements MetadataStore {
  readonly endpoints: string;
  readonly #client: Etcd3;
  /**
   * The liveness lease, its keepalives and the leader campaign run on a client of their own. The etcd3
   * library closes every channel of a host when any call or stream on it fails with a recoverable error
   * (a deadline, a cancel): with one client, a list that ran out its deadline under load took the
   * keepalive streams down with it, and one late keepalive took the watches down. Apart, a fault on one
   * side reconnects that side only.
   */
  readonly #livenessClient: Etcd3;
  readonly #tls: EtcdClientTls | undefined;
  #closed = false;

  private constructor(endpoints: string, tls?: EtcdClientTls) {
    this.endpoints = endpoints;
    this.#tls = tls;
    this.#client = createClient(endpoints, tls);
    this.#livenessClient = createClient(endpoints, tls);
  }

  /**
   * A store on the etcd at `endpoints` (client URLs, comma-separated; `https://` ones with `tls`). Connects
   * lazily: the first call fails when it cannot.
   */
  static connect(endpoints: string, tls?: EtcdClientTls): EtcdMetadataStore {
    return new EtcdMetadataStore(endpoints, tls);
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
    const lease = this.#livenessClient.lease(ttlS, { autoKeepAlive: false });
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
    const leaseId = await lease.grant();
    const keepalive = keepLeaseAlive(leaseId, ttlS, new KeepaliveConnection(this.endpoints, this.#tls), on);
    const campaign = this.#livenessClient.election(LEADER_ELECTION, ttlS).campaign(nodeId);
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
    this.#livenessClient.close();
  }
}

/**
 * The connection keepalives go over: its own etcd3 client, replaced by a fresh one (a new TCP
 * connection) when a keepalive on it goes unanswered. CI runs showed a node whose keepalive streams
 * got no answer for seconds right after it started, while its unary calls and the other nodes were
 * answered: the lease lapsed although the node and etcd were fine. (That one was the local cluster's
 * bridge changing its address as nodes joined, fixed in host-network.ts; a connection can still break
 * on a real network.) A keepalive renews the lease whichever connection carries it, so the next one
 * goes out on a new connection within a third of the TTL.
 */
class KeepaliveConnection {
  readonly #endpoints: string;
  readonly #tls: EtcdClientTls | undefined;
  #client: Etcd3;
  /** Connections made so far (1 + replacements), for the lost-lease report. */
  made = 1;

  constructor(endpoints: string, tls: EtcdClientTls | undefined) {
    this.#endpoints = endpoints;
    this.#tls = tls;
    this.#client = createClient(endpoints, tls);
  }

  get client(): Etcd3 {
    return this.#client;
  }

  /** Moves on to a new connection; the old one closes once its streams have ended. */
  replace(): void {
    const old = this.#client;
    this.#client = createClient(this.#endpoints, this.#tls);
    this.made++;
    setTimeout(() => old.close(), KEEPALIVE_CLOSE_DELAY_MS).unref();
  }

  close(): void {
    this.#client.close();
  }
}

/** How long a replaced keepalive connection stays open for the streams still ending on it. */
const KEEPALIVE_CLOSE_DELAY_MS = 1_000;

/**
 * One keepalive of lease `leaseId` on its own stream: resolves with the TTL etcd renewed it to (0: etcd
 * no longer knows the lease), or null when no answer came within `timeoutMs`. The stream is ended before
 * it is cancelled, so the etcd3 library does not take the cancel for a broken connection (it would close
 * every channel of the client).
 */
function keepaliveOnce(client: Etcd3, leaseId: string, timeoutMs: number): Promise<number | null> {
  return new Promise((resolve) => {
    let stream: IDuplexStream<ILeaseKeepAliveRequest, ILeaseKeepAliveResponse> | null = null;
    let settled = false;
    const settle = (ttl: number | null) => {
      if (settled) return;
      settled = true;
      clearTimeout(timer);
      if (stream) {
        stream.end();
        if (ttl === null) stream.cancel();
      }
      resolve(ttl);
    };
    const timer = setTimeout(() => settle(null), timeoutMs);
    client.leaseClient.leaseKeepAlive().then(
      (s) => {
        stream = s;
        s.on("data", (res) => settle(Number(res.TTL)));
        s.on("error", () => settle(null));
        if (settled) {
          s.end();
          s.cancel();
          return;
        }
        s.write({ ID: leaseId });
      },
      () => settle(null),
    );
  });
}

/**
 * Keeps the lease alive with one keepalive every third of its TTL, each on a fresh stream bounded by the
 * TTL (a slow etcd still renews). When a keepalive is still unanswered at the next tick, the next goes
 * out on a new connection (see {@link KeepaliveConnection}). Once a whole TTL passed without an answer
 * the lease has expired in etcd, and it is reported lost at once, as it is when etcd answers TTL 0.
 */
function keepLeaseAlive(leaseId: string, ttlS: number, conn: KeepaliveConnection, on: RegistrationHandlers): { stop(): void } {
  const intervalMs = (ttlS * 1000) / 3;
  let lastOkMs = Date.now();
  let stopped = false;
  let lost = false;
  // What a lost lease's report says of the node's side: how late this process's timers ran (an event
  // loop held up, or a starved CPU) and how many keepalives were still waiting for etcd.
  let lastTickMs = Date.now();
  let worstLateMs = 0;
  let inFlight = 0;
  const loseIt = (error: unknown) => {
    if (stopped || lost) return;
    lost = true;
    clearInterval(timer);
    conn.close();
    on.lost(error);
  };
  const tick = () => {
    if (stopped || lost) return;
    const now = Date.now();
    worstLateMs = Math.max(worstLateMs, now - lastTickMs - intervalMs);
    lastTickMs = now;
    if (now - lastOkMs > ttlS * 1000) {
      return loseIt(
        new KeelsonError({
          code: "UNAVAILABLE",
          message: `no keepalive answered for ${ttlS} s: the lease expired (${inFlight} keepalives unanswered over ${conn.made} connections; timers ran up to ${Math.max(0, Math.round(worstLateMs))} ms late)`,
        }),
      );
    }
    // The last one is still waiting: do not wait on that connection too.
    if (inFlight > 0) conn.replace();
    // The lease runs from when etcd renewed it, which is no earlier than the send: count from there.
    const sentMs = now;
    inFlight++;
    void keepaliveOnce(conn.client, leaseId, ttlS * 1000).then((ttl) => {
      inFlight--;
      if (stopped || lost) return;
      if (ttl === null) {
        on.keepaliveFailed?.(
          new KeelsonError({ code: "UNAVAILABLE", message: `etcd did not answer a keepalive within ${ttlS} s` }),
        );
      } else if (ttl <= 0) {
        loseIt(new KeelsonError({ code: "UNAVAILABLE", message: "etcd no longer knows the lease: it expired" }));
      } else if (sentMs >= lastOkMs) {
        lastOkMs = sentMs;
        worstLateMs = 0;
      }
    });
  };
  const timer = setInterval(tick, intervalMs);
  timer.unref();
  tick();
  return {
    stop: () => {
      stopped = true;
      clearInterval(timer);
      conn.close();
    },
  };
}
