// @keelson/engine: the node daemon as a library (for the local cluster, the conformance suite and tests).

export type { LocalClusterOptions, LocalClusterState, LocalNodeState } from "./cluster/local-cluster.js";
export { LOCAL_DISK_CAPABILITY, LocalCluster, StartedLocalCluster } from "./cluster/local-cluster.js";
export type { EngineOptions, StartedEngine } from "./daemon/engine.js";
export { DEFAULT_GRPC_ADDRESS, DEFAULT_NBD_ADDRESS, ENGINE_VERSION, startEngine, writeReadyFile } from "./daemon/engine.js";
export { NBD_ERRNO_BY_CODE } from "./nbd/errno.js";
export type { ExportCallback, ExportCatalog, NbdExport } from "./nbd/export.js";
export type { NbdListenOptions } from "./nbd/server.js";
export { HANDSHAKE_TIMEOUT_MS, MAX_CONNECTIONS, NbdServer } from "./nbd/server.js";
export { BLOCK_SIZE_BYTES, DEFAULT_EXTENT_SIZE_BYTES } from "./store/layout.js";
export type { CreateVolumeOptions, OpenPoolOptions, PoolSpace } from "./store/pool.js";
export { Pool } from "./store/pool.js";
export { formatBytes, parseSizeBytes } from "./util/size.js";
