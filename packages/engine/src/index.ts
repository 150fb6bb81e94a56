// @keelson/engine: the node daemon as a library (for the local cluster, the conformance suite and tests).
// A small API on purpose: start an engine or a local cluster. The store, the NBD server and the
// other folders are internals that may change; clients talk to an engine through @keelson/sdk.

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
export { formatBytes, parseSizeBytes } from "./util/size.js";
