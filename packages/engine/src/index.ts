// @keelson/engine: the node daemon as a library (for the local cluster, the conformance suite and tests).

export type { EngineOptions, StartedEngine } from "./daemon/engine.js";
export { DEFAULT_GRPC_ADDRESS, DEFAULT_NBD_ADDRESS, ENGINE_VERSION, startEngine, writeReadyFile } from "./daemon/engine.js";
// The local cluster harness (`keelson up`, the conformance suite's local target, bench/): it drives keelsond processes.
export type { HostNetwork } from "./local-cluster/host-network.js";
export type { LocalClusterOptions } from "./local-cluster/local-cluster.js";
export {
  adminCredentials,
  LOCAL_DISK_CAPABILITY,
  LocalCluster,
  StartedLocalCluster,
} from "./local-cluster/local-cluster.js";
export type { CertFiles, LocalPki } from "./local-cluster/local-pki.js";
export type { LocalClusterState, LocalNodeState } from "./local-cluster/state.js";
export { NBD_ERRNO_BY_CODE } from "./nbd/errno.js";
export type { ExportCallback, ExportCatalog, NbdExport } from "./nbd/export.js";
export type { NbdListenOptions } from "./nbd/server.js";
export { HANDSHAKE_TIMEOUT_MS, MAX_CONNECTIONS, NbdServer } from "./nbd/server.js";
export { BLOCK_SIZE_BYTES, DEFAULT_EXTENT_SIZE_BYTES } from "./store/layout.js";
export type { CreateVolumeOptions, OpenPoolOptions, PoolSpace } from "./store/pool.js";
export { Pool } from "./store/pool.js";
export { formatBytes, parseSizeBytes } from "./util/size.js";
