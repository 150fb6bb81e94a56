/** Health of a volume as a whole. */
export type VolumeState = "healthy" | "degraded" | "rebuilding" | "faulted" | "unknown";

/** Where a volume is served over NBD. */
export interface VolumeExport {
  /** NBD export name (the volume name). */
  exportName: string;
  /** `nbd://host:port/name`, or "" when the engine serves no TCP listener. */
  nbdTcpUri: string;
  /** `nbd+unix:///name?socket=/path`, or "" when the engine serves no unix socket. */
  nbdUnixUri: string;
}

/** A thin-provisioned block volume. */
export interface Volume {
  name: string;
  /** Stable unique id; a re-created volume gets a new one. */
  uid: string;
  sizeBytes: number;
  /** Pool bytes that this volume's data occupies. */
  allocatedBytes: number;
  state: VolumeState;
  labels: Readonly<Record<string, string>>;
  createdAt: Date;
  replicas: number;
  export: VolumeExport;
  /** NBD connections open to the volume now. */
  connections: number;
}

/** Space of the engine's disk pool. */
export interface Pool {
  uid: string;
  path: string;
  totalBytes: number;
  allocatedBytes: number;
  freeBytes: number;
  extentSizeBytes: number;
  volumeCount: number;
}

/** One engine: identity, pool and endpoints. */
export interface NodeInfo {
  nodeId: string;
  version: string;
  pool: Pool;
  /** `host:port` of the NBD TCP listener, or "". */
  nbdTcpAddress: string;
  /** Path of the NBD unix socket, or "". */
  nbdUnixSocket: string;
}

/** Request of {@link KeelsonClient.createVolume}. */
export interface CreateVolumeRequest {
  /** 1-63 characters of `a-z 0-9 - _ .`, starting with a letter or digit. */
  name: string;
  /** A positive multiple of 4096. */
  sizeBytes: number;
  labels?: Record<string, string>;
  /** Replicas wanted; default 1. */
  replicas?: number;
}

/** Request naming one volume. */
export interface VolumeRef {
  name: string;
}

/** Request of {@link KeelsonClient.deleteVolume}. */
export interface DeleteVolumeRequest {
  name: string;
  /** Disconnect open NBD clients instead of failing with VOLUME_IN_USE. */
  force?: boolean;
}

/** Result of {@link KeelsonClient.deleteVolume}. */
export interface DeleteVolumeResult {
  /** Bytes returned to the pool. */
  freedBytes: number;
}

/** Request of {@link KeelsonClient.resizeVolume}. */
export interface ResizeVolumeRequest {
  name: string;
  /** New size: a multiple of 4096, not smaller than the current one. */
  sizeBytes: number;
}

/** Per-call options accepted by every client method. */
export interface CallOptions {
  /** Deadline of this call; defaults to the client's `defaultTimeoutMs`. */
  timeoutMs?: number;
  /** Cancels the call (and its retries); the call rejects with CANCELLED. */
  signal?: AbortSignal;
}
