// @keelson/sdk/experimental: surfaces that may still change between minor
// versions. Today: the raw generated control-API service definitions, which
// the engine uses to serve the API and which tools may use for raw access.

export { extentsToBitmap, volumeStateToWire } from "./convert.js";
export type {
  Event as WireEvent,
  EventServiceServer,
  WatchRequest as WireWatchRequest,
} from "./gen/keelson/v1/events.js";
export { EventServiceService } from "./gen/keelson/v1/events.js";
export type {
  Attachment as WireAttachment,
  AttachVolumeRequest as WireAttachVolumeRequest,
  ClusterNode as WireClusterNode,
  CreateSnapshotRequest as WireCreateSnapshotRequest,
  CreateVolumeRequest as WireCreateVolumeRequest,
  DeleteSnapshotRequest as WireDeleteSnapshotRequest,
  DeleteSnapshotResponse as WireDeleteSnapshotResponse,
  DeleteVolumeRequest as WireDeleteVolumeRequest,
  DeleteVolumeResponse as WireDeleteVolumeResponse,
  DetachVolumeRequest as WireDetachVolumeRequest,
  DiskCapability as WireDiskCapability,
  GetNodeRequest as WireGetNodeRequest,
  GetVolumeRequest as WireGetVolumeRequest,
  ListAttachmentsResponse as WireListAttachmentsResponse,
  ListNodesResponse as WireListNodesResponse,
  ListSnapshotsResponse as WireListSnapshotsResponse,
  ListVolumesRequest as WireListVolumesRequest,
  ListVolumesResponse as WireListVolumesResponse,
  Node as WireNode,
  NodeServiceServer,
  Pool as WirePool,
  QosPolicy as WireQosPolicy,
  ResizeVolumeRequest as WireResizeVolumeRequest,
  Snapshot as WireSnapshot,
  SnapshotChanges as WireSnapshotChanges,
  SnapshotServiceServer,
  Volume as WireVolume,
  VolumeServiceServer,
  VolumeSource as WireVolumeSource,
} from "./gen/keelson/v1/volume.js";
export {
  NodeServiceService,
  SnapshotServiceService,
  VolumeServiceService,
  VolumeState as WireVolumeState,
} from "./gen/keelson/v1/volume.js";
