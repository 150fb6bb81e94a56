// @keelson/sdk/experimental: surfaces that may still change between minor
// versions. Today: the raw generated control-API service definitions, which
// the engine uses to serve the API and which tools may use for raw access.
export {
  VolumeServiceService,
  NodeServiceService,
  VolumeState as WireVolumeState,
} from "./gen/keelson/v1/volume.js";
export type {
  VolumeServiceServer,
  NodeServiceServer,
  Volume as WireVolume,
  Node as WireNode,
  Pool as WirePool,
  CreateVolumeRequest as WireCreateVolumeRequest,
  GetVolumeRequest as WireGetVolumeRequest,
  ListVolumesRequest as WireListVolumesRequest,
  ListVolumesResponse as WireListVolumesResponse,
  DeleteVolumeRequest as WireDeleteVolumeRequest,
  DeleteVolumeResponse as WireDeleteVolumeResponse,
  ResizeVolumeRequest as WireResizeVolumeRequest,
  GetNodeRequest as WireGetNodeRequest,
} from "./gen/keelson/v1/volume.js";
export { volumeStateToWire } from "./convert.js";
