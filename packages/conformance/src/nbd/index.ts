// The NBD client's public pieces: a vendor-neutral client for any export the
// suite can reach, and the URI forms it accepts.

export {
  CLOSE_GRACE_MS,
  describeNbdError,
  MAX_IN_FLIGHT,
  type NbdClientConnection,
  nbdReader,
  type OpenNbdOptions,
  openNbd,
} from "./client.js";
export { MAX_REQUEST_BYTES, NBD_ERRNO, TRANSMISSION_FLAG } from "./protocol.js";
export type { NbdConnection, NbdReplyError } from "./types.js";
export { DEFAULT_NBD_PORT, formatNbdUri, NBD_URI_FORMS, type NbdAddress, parseNbdUri } from "./uri.js";
