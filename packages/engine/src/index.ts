// @keelson/engine: the node daemon as a library (for the local cluster, the conformance suite and tests).
// A small API on purpose: start an engine or a local cluster. The store, the NBD server and the
// other folders are internals that may change; clients talk to an engine through @keelson/sdk.

export type { LocalClusterOptions, LocalClusterState, LocalNodeState } from "./cluster/local-cluster.js";
export { LOCAL_DISK_CAPABILITY, LocalCluster, StartedLocalCluster } from "./cluster/local-cluster.js";
export type { EngineOptions, StartedEngine } from "./daemon/engine.js";
export { DEFAULT_GRPC_ADDRESS, DEFAULT_NBD_ADDRESS, ENGINE_VERSION, startEngine, writeReadyFile } from "./daemon/engine.js";
export { formatBytes, parseSizeBytes } from "./util/size.js";
