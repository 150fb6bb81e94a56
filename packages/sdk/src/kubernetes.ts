// @keelson/sdk/kubernetes: PVC and VolumeSnapshot helpers over @kubernetes/client-node
// (an optional peer dependency: install it to use this entry point).
import {
  ApiException,
  CoreV1Api,
  CustomObjectsApi,
  type KubeConfig,
  PatchStrategy,
  setHeaderOptions,
  type V1PersistentVolumeClaim,
} from "@kubernetes/client-node";
import { type ErrorCode, KeelsonError } from "./errors.js";

/** The API clients the helpers use; make them once from a KubeConfig. */
export interface KubeClients {
  core: CoreV1Api;
  objects: CustomObjectsApi;
}

/**
 * API clients from a loaded KubeConfig.
 *
 * @example
 * const kc = new KubeConfig();
 * kc.loadFromDefault();
 * const k = kubeClients(kc);
 */
export function kubeClients(kc: KubeConfig): KubeClients {
  return { core: kc.makeApiClient(CoreV1Api), objects: kc.makeApiClient(CustomObjectsApi) };
}

/** How long to wait, and how often to look. */
export interface WaitOptions {
  /** Default 300000 (provisioning can take minutes). */
  timeoutMs?: number;
  /** Default 1000. */
  pollMs?: number;
  signal?: AbortSignal;
}

/** Request of {@link createPvc}. */
export interface CreatePvcRequest extends WaitOptions {
  namespace: string;
  name: string;
  storageClassName: string;
  sizeBytes: number;
  /** Default ["ReadWriteOnce"]. */
  accessModes?: string[];
  /** "Filesystem" (default) or "Block". */
  volumeMode?: "Filesystem" | "Block";
  labels?: Record<string, string>;
  /** Restore from this VolumeSnapshot (same namespace). */
  fromSnapshot?: string;
  /**
   * Wait for Bound (default true). A StorageClass with
   * `volumeBindingMode: WaitForFirstConsumer` binds only once a pod uses the
   * claim: pass false there.
   */
  waitForBound?: boolean;
}

/** A VolumeSnapshot (snapshot.storage.k8s.io/v1) as the helpers read it. */
export interface VolumeSnapshot {
  apiVersion: "snapshot.storage.k8s.io/v1";
  kind: "VolumeSnapshot";
  metadata: { name: string; namespace: string; labels?: Record<string, string>; uid?: string };
  spec: { source: { persistentVolumeClaimName: string }; volumeSnapshotClassName?: string };
  status?: {
    readyToUse?: boolean;
    restoreSize?: string;
    boundVolumeSnapshotContentName?: string;
    error?: { message?: string; time?: string };
  };
}

/** Request of {@link snapshotPvc}. */
export interface SnapshotPvcRequest extends WaitOptions {
  namespace: string;
  /** The VolumeSnapshot's name. */
  name: string;
  /** The claim to snapshot. */
  pvc: string;
  volumeSnapshotClassName?: string;
  labels?: Record<string, string>;
}

/** Request of {@link expandPvc}. */
export interface ExpandPvcRequest extends WaitOptions {
  namespace: string;
  name: string;
  sizeBytes: number;
}

const SNAPSHOTS = { group: "snapshot.storage.k8s.io", version: "v1", plural: "volumesnapshots" } as const;
const UNITS: Record<string, number> = {
  "": 1,
  k: 1e3,
  M: 1e6,
  G: 1e9,
  T: 1e12,
  P: 1e15,
  Ki: 2 ** 10,
  Mi: 2 ** 20,
  Gi: 2 ** 30,
  Ti: 2 ** 40,
  Pi: 2 ** 50,
};

/**
 * Bytes of a Kubernetes quantity ("10Gi", "500M", "1073741824"); NaN when
 * it is not one.
 *
 * @example
 * quantityBytes("10Gi"); // 10737418240
 */
export function quantityBytes(q: string): number {
  const m = /^(\d+(?:\.\d+)?)([kMGTP]i?|Ki)?$/.exec(q.trim());
  if (!m) return Number.NaN;
  const unit = UNITS[m[2] ?? ""];
  return unit === undefined ? Number.NaN : Math.round(Number(m[1]) * unit);
}

/** The message of a Kubernetes Status body (an object, or its JSON text as some clients leave it). */
function statusMessage(body: unknown): string | null {
  if (typeof body === "string") {
    try {
      return statusMessage(JSON.parse(body)) ?? body;
    } catch {
      return body || null;
    }
  }
  if (body && typeof body === "object" && typeof (body as { message?: unknown }).message === "string") {
    return (body as { message: string }).message;
  }
  return null;
}

/**
 * A Kubernetes API failure as a KeelsonError: the status decides the code, the API's message is kept.
 *
 * @example
 * try { await k.core.deleteNamespacedPersistentVolumeClaim({ namespace, name }); } catch (e) { throw kubeError(e, "deleting"); }
 */
export function kubeError(error: unknown, what: string): KeelsonError {
  if (error instanceof KeelsonError) return error;
  if (error instanceof ApiException) {
    const status = error.code;
    const code: ErrorCode =
      status === 404
        ? "VOLUME_NOT_FOUND"
        : status === 409
          ? "ALREADY_EXISTS"
          : status === 400 || status === 422
            ? "INVALID_ARGUMENT"
            : status === 401 || status === 403
              ? "PERMISSION_DENIED"
              : status === 429 || status >= 500
                ? "UNAVAILABLE"
                : "INTERNAL";
    const detail = statusMessage(error.body) ?? error.message;
    return new KeelsonError({ code, message: `${what}: Kubernetes API ${status}: ${detail}`, cause: error });
  }
  return new KeelsonError({
    code: "UNAVAILABLE",
    message: `${what}: ${(error as Error).message ?? String(error)}`,
    cause: error,
  });
}

async function pollUntil<T>(
  what: string,
  read: () => Promise<T>,
  done: (value: T) => boolean,
  describe: (value: T) => string,
  o: WaitOptions,
): Promise<T> {
  const deadline = Date.now() + (o.timeoutMs ?? 300_000);
  const pollMs = o.pollMs ?? 1_000;
  for (;;) {
    if (o.signal?.aborted) throw new KeelsonError({ code: "CANCELLED", message: `${what}: cancelled` });
    const value = await read();
    if (done(value)) return value;
    if (Date.now() + pollMs > deadline) {
      throw new KeelsonError({ code: "DEADLINE_EXCEEDED", message: `${what}: not done in time (${describe(value)})` });
    }
    await new Promise((r) => setTimeout(r, pollMs));
  }
}

async function readPvc(k: KubeClients, namespace: string, name: string): Promise<V1PersistentVolumeClaim> {
  try {
    return await k.core.readNamespacedPersistentVolumeClaim({ namespace, name });
  } catch (error) {
    throw kubeError(error, `reading PVC ${namespace}/${name}`);
  }
}

/**
 * The claim object {@link createPvc} sends (exported so its shape can be checked).
 *
 * @example
 * console.log(JSON.stringify(pvcObject({ namespace: "db", name: "pg", storageClassName: "keelson", sizeBytes: 2 ** 30 })));
 */
export function pvcObject(r: CreatePvcRequest): V1PersistentVolumeClaim {
  if (!Number.isSafeInteger(r.sizeBytes) || r.sizeBytes <= 0) {
    throw new KeelsonError({ code: "INVALID_ARGUMENT", message: `sizeBytes must be a positive integer, got ${r.sizeBytes}` });
  }
  return {
    apiVersion: "v1",
    kind: "PersistentVolumeClaim",
    metadata: { name: r.name, namespace: r.namespace, ...(r.labels ? { labels: r.labels } : {}) },
    spec: {
      storageClassName: r.storageClassName,
      accessModes: r.accessModes ?? ["ReadWriteOnce"],
      volumeMode: r.volumeMode ?? "Filesystem",
      resources: { requests: { storage: String(r.sizeBytes) } },
      ...(r.fromSnapshot ? { dataSource: { apiGroup: SNAPSHOTS.group, kind: "VolumeSnapshot", name: r.fromSnapshot } } : {}),
    },
  };
}

/**
 * Creates a PersistentVolumeClaim on a StorageClass (restored from a
 * VolumeSnapshot with `fromSnapshot`) and waits until it is Bound. An
 * existing claim of that name is waited on, not replaced (idempotent).
 *
 * @example
 * const pvc = await createPvc(k, { namespace: "db", name: "pg-data", storageClassName: "keelson", sizeBytes: 10 * 2 ** 30 });
 * console.log(pvc.spec?.volumeName);
 */
export async function createPvc(k: KubeClients, r: CreatePvcRequest): Promise<V1PersistentVolumeClaim> {
  const body = pvcObject(r);
  let created: V1PersistentVolumeClaim;
  try {
    created = await k.core.createNamespacedPersistentVolumeClaim({ namespace: r.namespace, body });
  } catch (error) {
    const e = kubeError(error, `creating PVC ${r.namespace}/${r.name}`);
    if (e.code !== "ALREADY_EXISTS") throw e;
    created = await readPvc(k, r.namespace, r.name);
  }
  if (r.waitForBound === false) return created;
  return pollUntil(
    `PVC ${r.namespace}/${r.name} to be Bound`,
    () => readPvc(k, r.namespace, r.name),
    (p) => p.status?.phase === "Bound",
    (p) => `phase ${p.status?.phase ?? "unknown"}`,
    r,
  );
}

/**
 * Restores a new claim from a VolumeSnapshot and waits until it is Bound.
 *
 * @example
 * await restorePvc(k, { namespace: "db", name: "pg-copy", fromSnapshot: "nightly", storageClassName: "keelson", sizeBytes: 10 * 2 ** 30 });
 */
export function restorePvc(k: KubeClients, r: CreatePvcRequest & { fromSnapshot: string }): Promise<V1PersistentVolumeClaim> {
  return createPvc(k, r);
}

function asSnapshot(value: unknown): VolumeSnapshot {
  return value as VolumeSnapshot;
}

/**
 * Takes a VolumeSnapshot of a claim and waits until it is readyToUse; a
 * snapshot reporting an error fails at once (INTERNAL, with its message).
 * An existing snapshot of that name is waited on (idempotent).
 *
 * @example
 * const snap = await snapshotPvc(k, { namespace: "db", name: "nightly", pvc: "pg-data", volumeSnapshotClassName: "keelson" });
 * console.log(snap.status?.restoreSize);
 */
export async function snapshotPvc(k: KubeClients, r: SnapshotPvcRequest): Promise<VolumeSnapshot> {
  const body: VolumeSnapshot = {
    apiVersion: "snapshot.storage.k8s.io/v1",
    kind: "VolumeSnapshot",
    metadata: { name: r.name, namespace: r.namespace, ...(r.labels ? { labels: r.labels } : {}) },
    spec: {
      source: { persistentVolumeClaimName: r.pvc },
      ...(r.volumeSnapshotClassName ? { volumeSnapshotClassName: r.volumeSnapshotClassName } : {}),
    },
  };
  const what = `VolumeSnapshot ${r.namespace}/${r.name}`;
  try {
    await k.objects.createNamespacedCustomObject({ ...SNAPSHOTS, namespace: r.namespace, body });
  } catch (error) {
    const e = kubeError(error, `creating ${what}`);
    if (e.code !== "ALREADY_EXISTS") throw e;
  }
  const read = async (): Promise<VolumeSnapshot> => {
    let s: VolumeSnapshot;
    try {
      s = asSnapshot(await k.objects.getNamespacedCustomObject({ ...SNAPSHOTS, namespace: r.namespace, name: r.name }));
    } catch (error) {
      throw kubeError(error, `reading ${what}`);
    }
    if (s.status?.error?.message) {
      throw new KeelsonError({ code: "INTERNAL", message: `${what} failed: ${s.status.error.message}` });
    }
    return s;
  };
  return pollUntil(
    `${what} to be ready`,
    read,
    (s) => s.status?.readyToUse === true,
    (s) => `readyToUse ${s.status?.readyToUse ?? false}`,
    r,
  );
}

/**
 * Grows a claim to `sizeBytes` and waits until its capacity shows it (the
 * StorageClass must allow expansion). Shrinking is refused with
 * SHRINK_NOT_SUPPORTED before anything is sent.
 *
 * @example
 * await expandPvc(k, { namespace: "db", name: "pg-data", sizeBytes: 20 * 2 ** 30 });
 */
export async function expandPvc(k: KubeClients, r: ExpandPvcRequest): Promise<V1PersistentVolumeClaim> {
  const current = await readPvc(k, r.namespace, r.name);
  const requested = quantityBytes(current.spec?.resources?.requests?.storage ?? "0");
  if (r.sizeBytes < requested) {
    throw new KeelsonError({
      code: "SHRINK_NOT_SUPPORTED",
      message: `PVC ${r.namespace}/${r.name} requests ${requested} bytes; it cannot shrink to ${r.sizeBytes}`,
    });
  }
  if (r.sizeBytes > requested) {
    try {
      await k.core.patchNamespacedPersistentVolumeClaim(
        { namespace: r.namespace, name: r.name, body: { spec: { resources: { requests: { storage: String(r.sizeBytes) } } } } },
        setHeaderOptions("Content-Type", PatchStrategy.MergePatch),
      );
    } catch (error) {
      throw kubeError(error, `expanding PVC ${r.namespace}/${r.name}`);
    }
  }
  return pollUntil(
    `PVC ${r.namespace}/${r.name} to reach ${r.sizeBytes} bytes`,
    () => readPvc(k, r.namespace, r.name),
    (p) => quantityBytes(p.status?.capacity?.storage ?? "0") >= r.sizeBytes,
    (p) => `capacity ${p.status?.capacity?.storage ?? "unknown"}`,
    r,
  );
}
