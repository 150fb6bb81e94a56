// NBD URIs (the subset of NetworkBlockDevice/nbd doc/uri.md this client
// speaks): plain TCP and Unix sockets, no TLS.

import { ConformanceError } from "../errors.js";
import { MAX_EXPORT_NAME_BYTES } from "./protocol.js";

/** The IANA port of NBD, used when an `nbd://` URI names none. */
export const DEFAULT_NBD_PORT = 10809;

/** The URI forms {@link parseNbdUri} accepts, for messages. */
export const NBD_URI_FORMS = ["nbd://host[:port]/export", "nbd+unix:///export?socket=/path"] as const;

/** Where an NBD export is and what it is called. */
export type NbdAddress =
  | { transport: "tcp"; host: string; port: number; exportName: string }
  | { transport: "unix"; socketPath: string; exportName: string };

function invalid(uri: string, why: string): ConformanceError {
  return new ConformanceError({
    code: "INVALID_ARGUMENT",
    message: `NBD URI ${JSON.stringify(uri)} ${why}; valid forms: ${NBD_URI_FORMS.join(", ")}`,
  });
}

/** Query parameters decoded without URLSearchParams, which would turn "+" in a socket path into a space. */
function queryParams(uri: string, search: string): Map<string, string> {
  const params = new Map<string, string>();
  for (const part of search.replace(/^\?/, "").split("&")) {
    if (part === "") continue;
    const eq = part.indexOf("=");
    const key = eq < 0 ? part : part.slice(0, eq);
    const value = eq < 0 ? "" : part.slice(eq + 1);
    try {
      params.set(decodeURIComponent(key), decodeURIComponent(value));
    } catch {
      throw invalid(uri, `has a malformed query parameter ${JSON.stringify(part)}`);
    }
  }
  return params;
}

function exportNameOf(uri: string, pathname: string): string {
  let name: string;
  try {
    name = decodeURIComponent(pathname.replace(/^\//, ""));
  } catch {
    throw invalid(uri, "has a malformed percent-encoded export name");
  }
  if (Buffer.byteLength(name, "utf8") > MAX_EXPORT_NAME_BYTES) {
    throw invalid(uri, `has an export name longer than ${MAX_EXPORT_NAME_BYTES} bytes`);
  }
  return name;
}

function parseTcp(uri: string, url: URL): NbdAddress {
  if (url.hostname === "") throw invalid(uri, "names no host");
  if (url.search !== "") throw invalid(uri, `has query parameters (${url.search}) this client does not understand`);
  const port = url.port === "" ? DEFAULT_NBD_PORT : Number(url.port);
  if (!Number.isInteger(port) || port < 1 || port > 65535) throw invalid(uri, `has port ${url.port}, not 1-65535`);
  // An IPv6 literal keeps its brackets in URL.hostname; net.connect wants it bare.
  const host = url.hostname.replace(/^\[(.*)\]$/, "$1");
  return { transport: "tcp", host, port, exportName: exportNameOf(uri, url.pathname) };
}

function parseUnix(uri: string, url: URL): NbdAddress {
  if (url.host !== "") throw invalid(uri, `names host "${url.host}", but nbd+unix takes none (three slashes)`);
  const params = queryParams(uri, url.search);
  const socketPath = params.get("socket");
  if (socketPath === undefined || socketPath === "") throw invalid(uri, "has no socket=/path parameter");
  const unknown = [...params.keys()].filter((k) => k !== "socket");
  if (unknown.length > 0) throw invalid(uri, `has parameters ${unknown.join(", ")} this client does not understand`);
  return { transport: "unix", socketPath, exportName: exportNameOf(uri, url.pathname) };
}

/**
 * Parses an NBD URI. Throws ConformanceError INVALID_ARGUMENT for any other
 * scheme (including TLS `nbds://`), a missing host or socket, a bad port or
 * an over-long export name.
 */
export function parseNbdUri(uri: string): NbdAddress {
  let url: URL;
  try {
    url = new URL(uri);
  } catch {
    throw invalid(uri, "is not a URI");
  }
  if (url.hash !== "") throw invalid(uri, "has a fragment");
  if (url.username !== "" || url.password !== "") throw invalid(uri, "has credentials");
  if (url.protocol === "nbd:") return parseTcp(uri, url);
  if (url.protocol === "nbd+unix:") return parseUnix(uri, url);
  throw invalid(uri, `has scheme "${url.protocol.replace(/:$/, "")}", which this client does not speak`);
}

/** The URI of an address; `parseNbdUri(formatNbdUri(a))` equals `a`. */
export function formatNbdUri(address: NbdAddress): string {
  const name = encodeURIComponent(address.exportName);
  if (address.transport === "unix") {
    // Slashes are legal in a query value and keep the socket path readable.
    const socket = encodeURIComponent(address.socketPath).replaceAll("%2F", "/");
    return `nbd+unix:///${name}?socket=${socket}`;
  }
  const host = address.host.includes(":") ? `[${address.host}]` : address.host;
  return `nbd://${host}:${address.port}/${name}`;
}
