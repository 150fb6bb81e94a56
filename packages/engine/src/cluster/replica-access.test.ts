import { isKeelsonError } from "@keelson/sdk";
import { describe, expect, it } from "vitest";
import { type MetadataStore, refs } from "../metadata/index.js";
import { MemoryMetadataStore } from "../metadata/memory-store.js";
import { nextEpoch } from "./epochs.js";
import { ACCESS_LOOKUP_TIMEOUT_MS, ReplicaAccess, type ReplicaPeer } from "./replica-access.js";

const node = (id: string, ip: string) => ({
  nodeId: id,
  controlAddress: `${ip}:7420`,
  nbdAddress: `${ip}:10809`,
  storageAddress: ip,
  replicaAddress: `${ip}:10810`,
  zone: "",
  version: "test",
  registeredAtMs: 0,
  state: "up" as const,
  stateSinceMs: 0,
});

const from = (address: string): ReplicaPeer => ({ certifiedNode: null, address });
const certified = (nodeId: string): ReplicaPeer => ({ certifiedNode: nodeId, address: "10.9.9.9" });

async function codeOf(p: Promise<unknown>): Promise<string> {
  return p.then(
    (v) => `granted ${String(v)}`,
    (e: unknown) => (isKeelsonError(e) ? e.code : String(e)),
  );
}

/** A store whose reads can be made to hang (etcd paused or cut off), counting the reads that reached it. */
function pausable(inner: MetadataStore): { store: MetadataStore; pause(): void; reads(): number } {
  let paused = false;
  let reads = 0;
  const hang = new Promise<never>(() => undefined);
  const store = new Proxy(inner, {
    get(target, prop, receiver) {
      const value = Reflect.get(target, prop, receiver);
      if (prop !== "get" && prop !== "list") return typeof value === "function" ? value.bind(target) : value;
      return (...args: unknown[]) => {
        reads++;
        return paused ? hang : (value as (...a: unknown[]) => Promise<unknown>).apply(target, args);
      };
    },
  });
  return { store, pause: () => (paused = true), reads: () => reads };
}

async function cluster() {
  const inner = new MemoryMetadataStore();
  for (const [id, ip] of [
    ["node1", "10.0.0.11"],
    ["node2", "10.0.0.12"],
  ] as const) {
    await inner.put(refs.node(id), node(id, ip));
  }
  const etcd = pausable(inner);
  return { etcd, access: new ReplicaAccess(() => etcd.store) };
}

describe("replica access", () => {
  it("the epoch's holder writes, another node reads, a stranger gets nothing; epochs are the fence's or etcd's, never the client's", async () => {
    const { etcd, access } = await cluster();
    const epoch = await nextEpoch(etcd.store, "db", "node1");
    // Fenced at the epoch etcd granted: its holder writes (by address or certificate), another node reads.
    expect(await access.grant("db", epoch, epoch, from("10.0.0.11"))).toBe("write");
    expect(await access.grant("db", epoch, epoch, from("::ffff:10.0.0.11"))).toBe("write");
    expect(await access.grant("db", epoch, epoch, certified("node1"))).toBe("write");
    expect(await access.grant("db", epoch, epoch, from("10.0.0.12"))).toBe("read");
    expect(await access.grant("db", epoch, epoch, certified("node2"))).toBe("read");
    expect(await codeOf(access.grant("db", epoch, epoch, from("10.0.0.99")))).toBe("PERMISSION_DENIED");
    expect(await codeOf(access.grant("db", epoch, epoch, certified("node9")))).toBe("PERMISSION_DENIED");
    // An epoch the replica was fenced past, or one past its fence that etcd did not grant: stale.
    expect(await codeOf(access.grant("db", epoch, epoch + 1, from("10.0.0.11")))).toBe("EPOCH_STALE");
    expect(await codeOf(access.grant("db", 99, epoch, from("10.0.0.11")))).toBe("EPOCH_STALE");
    // A replica that missed its fence: a reader at the current epoch reads; nobody writes through it.
    expect(await access.grant("db", epoch, epoch - 1, from("10.0.0.11"))).toBe("read");
    // Fenced at an epoch etcd has not granted (FenceVolume takes the next one on trust): nobody writes at it.
    expect(await codeOf(access.grant("db", epoch + 1, epoch + 1, from("10.0.0.11")))).toBe("EPOCH_STALE");
  });

  it("etcd unreachable: what etcd said is kept, the replica's fencer may write, every other open fails UNAVAILABLE within the bound", async () => {
    const { etcd, access } = await cluster();
    const e1 = await nextEpoch(etcd.store, "db", "node1");
    expect(await access.grant("db", e1, e1, from("10.0.0.11"))).toBe("write");
    const e2 = await nextEpoch(etcd.store, "db", "node2");
    etcd.pause();
    // node2 took e2 and fenced this replica at it, but etcd cannot be asked who holds e2.
    access.fenced("db", e2, from("10.0.0.12"));
    const started = Date.now();
    expect(await access.grant("db", e2, e2, from("10.0.0.12"))).toBe("write");
    expect(Date.now() - started).toBeLessThan(ACCESS_LOOKUP_TIMEOUT_MS + 2_000);
    expect(await codeOf(access.grant("db", e2, e2, from("10.0.0.11")))).toBe("UNAVAILABLE");
    // A stranger: etcd cannot say whether it joined since, so it is refused UNAVAILABLE (and not let write).
    expect(await codeOf(access.grant("db", e2, e2, from("10.0.0.99")))).toBe("UNAVAILABLE");
  });

  it("an open asks etcd nothing once the fence's lookup is kept; a stranger's retries do not reach etcd more than once a second", async () => {
    const { etcd, access } = await cluster();
    const epoch = await nextEpoch(etcd.store, "db", "node1");
    access.fenced("db", epoch, from("10.0.0.11"));
    expect(await access.grant("db", epoch, epoch, from("10.0.0.11"))).toBe("write");
    const before = etcd.reads();
    for (let i = 0; i < 50; i++) expect(await access.grant("db", epoch, epoch, from("10.0.0.11"))).toBe("write");
    for (let i = 0; i < 50; i++)
      expect(await codeOf(access.grant("db", epoch, epoch, from("10.0.0.99")))).toBe("PERMISSION_DENIED");
    expect(etcd.reads() - before).toBeLessThanOrEqual(1);
  });

  it("the fallback cannot be taken over: a second fence at the same epoch, a fencer etcd already named another holder for, a stranger that fenced", async () => {
    const { etcd, access } = await cluster();
    const e1 = await nextEpoch(etcd.store, "db", "node1");
    // node1 took e1 and opened (its holder is kept); node2 then fences at e1 too (a no-op on the replica).
    expect(await access.grant("db", e1, e1, from("10.0.0.11"))).toBe("write");
    access.fenced("db", e1, from("10.0.0.12"));
    const e2 = await nextEpoch(etcd.store, "db", "node1");
    access.fenced("db", e2, from("10.0.0.11"));
    access.fenced("db", e2, from("10.0.0.12"));
    etcd.pause();
    // What etcd said wins over any fence: at e1, node2 only reads.
    expect(await access.grant("db", e1, e1, from("10.0.0.12"))).toBe("read");
    // At e2 the first fencer (node1) is trusted while etcd is away, not the second.
    expect(await access.grant("db", e2, e2, from("10.0.0.11"))).toBe("write");
    expect(await codeOf(access.grant("db", e2, e2, from("10.0.0.12")))).toBe("UNAVAILABLE");
    // A stranger's fence (it would need the control API) still gets no write: it is no node this node knows.
    access.fenced("other", 1, from("10.0.0.99"));
    expect(await codeOf(access.grant("other", 1, 1, from("10.0.0.99")))).toBe("UNAVAILABLE");
  });

  it("a node whose etcd fails from its start (nothing kept yet) still lets the frontend that fenced it write", async () => {
    const { etcd, access } = await cluster();
    const epoch = await nextEpoch(etcd.store, "db", "node1");
    etcd.pause();
    access.fenced("db", epoch, from("10.0.0.11"));
    expect(await access.grant("db", epoch, epoch, from("10.0.0.11"))).toBe("write");
    expect(await codeOf(access.grant("db", epoch, epoch, from("10.0.0.12")))).toBe("UNAVAILABLE");
  });
});
