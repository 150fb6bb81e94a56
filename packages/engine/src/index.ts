// @keelson/engine: the node daemon as a library (for the local cluster, the conformance suite and tests).
export { startEngine, writeReadyFile, ENGINE_VERSION, DEFAULT_GRPC_ADDRESS, DEFAULT_NBD_ADDRESS } from "./daemon/engine.js";
export type { EngineOptions, StartedEngine } from "./daemon/engine.js";
export { Pool } from "./store/pool.js";
export type { OpenPoolOptions, PoolSpace, CreateVolumeOptions } from "./store/pool.js";
export { BLOCK_SIZE_BYTES, EXTENT_SIZE_BYTES } from "./store/layout.js";
export { NbdServer, HANDSHAKE_TIMEOUT_MS, MAX_CONNECTIONS } from "./nbd/server.js";
export type { NbdListenOptions } from "./nbd/server.js";
export type { NbdExport, ExportCatalog, ExportCallback } from "./nbd/export.js";
export { NBD_ERRNO_BY_CODE } from "./nbd/errno.js";
export { parseSizeBytes, formatBytes } from "./util/size.js";
