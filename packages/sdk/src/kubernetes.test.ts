import http from "node:http";
import type { AddressInfo } from "node:net";
import { KubeConfig } from "@kubernetes/client-node";
import { afterEach, describe, expect, it } from "vitest";
import { isKeelsonError } from "./errors.js";
import { createPvc, expandPvc, kubeClients, quantityBytes, restorePvc, snapshotPvc } from "./kubernetes.js";

/*
 * No Kubernetes API server runs here, so these tests run the real
 * @kubernetes/client-node against a small HTTP server that speaks the few
 * endpoints the helpers use (claims and VolumeSnapshots), with a "controller"
 * that binds, snapshots and resizes after a few reads. They check what the
 * helpers send and how they wait and fail; not what a real cluster does.
 */

interface Seen {
  method: string;
  path: string;
  contentType: string;
  body: unknown;
}

type Obj = Record<string, unknown> & {
  metadata: { name: string };
  spec?: Record<string, unknown>;
  status?: Record<string, unknown>;
};

function fakeApi(behaviour: { readsUntilDone?: number; fail?: (s: Seen) => { code: number; message: string } | null } = {}) {
  const seen: Seen[] = [];
  const objects = new Map<string, Obj>();
  const reads = new Map<string, number>();
  const done = behaviour.readsUntilDone ?? 2;
  const server = http.createServer((req, res) => {
    const chunks: Buffer[] = [];
    req.on("data", (c: Buffer) => chunks.push(c));
    req.on("end", () => {
      const text = Buffer.concat(chunks).toString();
      const s: Seen = {
        method: req.method ?? "",
        path: (req.url ?? "").split("?")[0] as string,
        contentType: String(req.headers["content-type"] ?? ""),
        body: text ? JSON.parse(text) : null,
      };
      seen.push(s);
      const reply = (code: number, body: unknown) => {
        res.writeHead(code, { "content-type": "application/json" });
        res.end(JSON.stringify(body));
      };
      const failure = behaviour.fail?.(s);
      if (failure)
        return reply(failure.code, { kind: "Status", status: "Failure", message: failure.message, code: failure.code });
      const m =
        /^\/(?:api\/v1|apis\/snapshot\.storage\.k8s\.io\/v1)\/namespaces\/([^/]+)\/(persistentvolumeclaims|volumesnapshots)(?:\/([^/]+))?$/.exec(
          s.path,
        );
      if (!m) return reply(404, { kind: "Status", message: `no route ${s.path}` });
      const [, ns, kind, name] = m;
      if (s.method === "POST") {
        const obj = s.body as Obj;
        const key = `${ns}/${kind}/${obj.metadata.name}`;
        if (objects.has(key)) return reply(409, { kind: "Status", message: `${kind} "${obj.metadata.name}" already exists` });
        objects.set(key, { ...obj, status: kind === "persistentvolumeclaims" ? { phase: "Pending" } : { readyToUse: false } });
        return reply(201, objects.get(key));
      }
      const key = `${ns}/${kind}/${name}`;
      const obj = objects.get(key);
      if (!obj) return reply(404, { kind: "Status", message: `${kind} "${name}" not found` });
      if (s.method === "PATCH") {
        const patch = s.body as { spec: { resources: { requests: { storage: string } } } };
        (obj.spec as { resources: { requests: { storage: string } } }).resources.requests.storage =
          patch.spec.resources.requests.storage;
        reads.set(key, 0);
        return reply(200, obj);
      }
      // GET: the "controller" acts after a few reads.
      const n = (reads.get(key) ?? 0) + 1;
      reads.set(key, n);
      if (n >= done) {
        if (kind === "persistentvolumeclaims") {
          const storage = (obj.spec as { resources: { requests: { storage: string } } }).resources.requests.storage;
          obj.status = { phase: "Bound", capacity: { storage } };
        } else obj.status = { readyToUse: true, restoreSize: "1Gi" };
      }
      return reply(200, obj);
    });
  });
  return {
    seen,
    objects,
    async start() {
      await new Promise<void>((r) => server.listen(0, "127.0.0.1", r));
      const kc = new KubeConfig();
      kc.loadFromOptions({
        clusters: [{ name: "fake", server: `http://127.0.0.1:${(server.address() as AddressInfo).port}`, skipTLSVerify: true }],
        users: [{ name: "u" }],
        contexts: [{ name: "fake", cluster: "fake", user: "u" }],
        currentContext: "fake",
      });
      return kubeClients(kc);
    },
    close: () => new Promise<void>((r) => server.close(() => r())),
  };
}

const servers: { close(): Promise<void> }[] = [];
afterEach(async () => {
  for (const s of servers.splice(0)) await s.close();
});

async function api(behaviour?: Parameters<typeof fakeApi>[0]) {
  const f = fakeApi(behaviour);
  servers.push(f);
  return { f, k: await f.start() };
}

const GIB = 2 ** 30;
const fast = { pollMs: 10, timeoutMs: 5_000 };

async function codeOf(p: Promise<unknown>): Promise<string> {
  try {
    await p;
    return "ok";
  } catch (e) {
    return isKeelsonError(e) ? `${e.code}: ${e.message}` : String(e);
  }
}

describe("kubernetes helpers (against a fake API server)", () => {
  it("createPvc sends the claim on the StorageClass and waits until it is Bound; again, it waits on the existing claim", async () => {
    const { f, k } = await api({ readsUntilDone: 3 });
    const pvc = await createPvc(k, { namespace: "db", name: "pg", storageClassName: "keelson", sizeBytes: 10 * GIB, ...fast });
    expect(pvc.status?.phase).toBe("Bound");
    const post = f.seen.find((s) => s.method === "POST");
    expect(post?.path).toBe("/api/v1/namespaces/db/persistentvolumeclaims");
    expect(post?.body).toMatchObject({
      kind: "PersistentVolumeClaim",
      metadata: { name: "pg", namespace: "db" },
      spec: {
        storageClassName: "keelson",
        accessModes: ["ReadWriteOnce"],
        volumeMode: "Filesystem",
        resources: { requests: { storage: String(10 * GIB) } },
      },
    });
    expect(f.seen.filter((s) => s.method === "GET").length).toBe(3);
    const again = await createPvc(k, { namespace: "db", name: "pg", storageClassName: "keelson", sizeBytes: 10 * GIB, ...fast });
    expect(again.status?.phase).toBe("Bound");
    expect(f.objects.size).toBe(1);
  });

  it("restorePvc names the VolumeSnapshot as the claim's data source; snapshotPvc waits until readyToUse", async () => {
    const { f, k } = await api();
    const snap = await snapshotPvc(k, {
      namespace: "db",
      name: "nightly",
      pvc: "pg",
      volumeSnapshotClassName: "keelson-snap",
      ...fast,
    });
    expect(snap.status?.readyToUse).toBe(true);
    expect(f.seen[0]).toMatchObject({
      method: "POST",
      path: "/apis/snapshot.storage.k8s.io/v1/namespaces/db/volumesnapshots",
      body: {
        kind: "VolumeSnapshot",
        spec: { source: { persistentVolumeClaimName: "pg" }, volumeSnapshotClassName: "keelson-snap" },
      },
    });
    await restorePvc(k, {
      namespace: "db",
      name: "pg-copy",
      fromSnapshot: "nightly",
      storageClassName: "keelson",
      sizeBytes: GIB,
      ...fast,
    });
    const post = f.seen.filter((s) => s.method === "POST")[1];
    expect(post?.body).toMatchObject({
      spec: {
        dataSource: { apiGroup: "snapshot.storage.k8s.io", kind: "VolumeSnapshot", name: "nightly" },
      },
    });
  });

  it("expandPvc merge-patches the request and waits for the capacity; shrinking is refused before anything is sent", async () => {
    const { f, k } = await api();
    await createPvc(k, { namespace: "db", name: "pg", storageClassName: "keelson", sizeBytes: GIB, ...fast });
    const grown = await expandPvc(k, { namespace: "db", name: "pg", sizeBytes: 2 * GIB, ...fast });
    expect(quantityBytes(grown.status?.capacity?.storage ?? "")).toBe(2 * GIB);
    const patch = f.seen.find((s) => s.method === "PATCH");
    expect(patch?.contentType).toBe("application/merge-patch+json");
    expect(patch?.body).toEqual({ spec: { resources: { requests: { storage: String(2 * GIB) } } } });
    const before = f.seen.length;
    expect(await codeOf(expandPvc(k, { namespace: "db", name: "pg", sizeBytes: GIB, ...fast }))).toMatch(/^SHRINK_NOT_SUPPORTED/);
    expect(f.seen.slice(before).every((s) => s.method === "GET")).toBe(true);
    expect(await codeOf(expandPvc(k, { namespace: "db", name: "nope", sizeBytes: GIB, ...fast }))).toMatch(/^VOLUME_NOT_FOUND/);
  });

  it("API refusals become typed errors with the API's message; a claim that never binds times out saying its phase", async () => {
    const { k } = await api({
      fail: (s) =>
        s.method === "POST" && s.path.endsWith("volumesnapshots")
          ? { code: 403, message: 'volumesnapshots is forbidden: User "ci" cannot create' }
          : s.method === "POST" && (s.body as Obj).metadata.name === "bad"
            ? { code: 422, message: "spec.resources.requests.storage: Invalid value" }
            : null,
      readsUntilDone: 1_000,
    });
    expect(await codeOf(snapshotPvc(k, { namespace: "db", name: "s", pvc: "pg", ...fast }))).toMatch(
      /^PERMISSION_DENIED: .*403.*forbidden: User "ci"/,
    );
    expect(await codeOf(createPvc(k, { namespace: "db", name: "bad", storageClassName: "x", sizeBytes: GIB, ...fast }))).toMatch(
      /^INVALID_ARGUMENT: .*422.*Invalid value/,
    );
    expect(
      await codeOf(
        createPvc(k, { namespace: "db", name: "slow", storageClassName: "x", sizeBytes: GIB, pollMs: 10, timeoutMs: 200 }),
      ),
    ).toMatch(/^DEADLINE_EXCEEDED: .*phase Pending/);
    expect(await codeOf(createPvc(k, { namespace: "db", name: "zero", storageClassName: "x", sizeBytes: 0 }))).toMatch(
      /^INVALID_ARGUMENT/,
    );
    // WaitForFirstConsumer classes: no wait.
    const pending = await createPvc(k, {
      namespace: "db",
      name: "later",
      storageClassName: "x",
      sizeBytes: GIB,
      waitForBound: false,
    });
    expect(pending.status?.phase).toBe("Pending");
  });

  it("a snapshot the controller reports failed fails at once with its message", async () => {
    const { f, k } = await api({ readsUntilDone: 1_000 });
    const p = snapshotPvc(k, { namespace: "db", name: "s", pvc: "pg", ...fast });
    await new Promise((r) => setTimeout(r, 50));
    const obj = f.objects.get("db/volumesnapshots/s") as Obj;
    obj.status = { readyToUse: false, error: { message: "failed to take snapshot: volume is detached" } };
    expect(await codeOf(p)).toMatch(/^INTERNAL: .*volume is detached/);
  });

  it("quantities: binary and decimal suffixes, plain bytes, junk", () => {
    expect(quantityBytes("10Gi")).toBe(10 * GIB);
    expect(quantityBytes("500M")).toBe(500e6);
    expect(quantityBytes("1073741824")).toBe(GIB);
    expect(quantityBytes("1.5Ki")).toBe(1536);
    expect(quantityBytes("ten")).toBeNaN();
    expect(quantityBytes("5Xi")).toBeNaN();
  });
});
