export { type ControllerEngine, controllerService, DEFAULT_VOLUME_BYTES } from "./controller-service.js";
export { CSI_PROTO_DIR, CSI_PROTO_FILE, CSI_SPEC_VERSION, loadCsiRoot } from "./csi-proto.js";
export {
  type CsiMode,
  type CsiServerOptions,
  DEFAULT_STATE_DIR,
  type StartedCsiServer,
  socketPathOf,
  startCsiServer,
} from "./csi-server.js";
export { DRIVER_NAME, type IdentityOptions, identityService } from "./identity-service.js";
export { MAX_VOLUMES_PER_NODE, type NodeServiceOptions, nodeService } from "./node-service.js";
export { parseParameters, type VolumeParameters } from "./parameters.js";
export { NODE_TOPOLOGY_KEY, ZONE_TOPOLOGY_KEY } from "./topology.js";
