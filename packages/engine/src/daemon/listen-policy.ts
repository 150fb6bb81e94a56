import net from "node:net";
import { KeelsonError } from "@keelson/sdk";
import type { CallerCheck } from "../control/roles.js";
import type { Logger } from "../util/log.js";

/**
 * Whether a control-API listen address is reachable only from this host: a unix socket, `localhost`, or an
 * IP of the loopback ranges (127.0.0.0/8, ::1). Any other name may resolve to anything, so it is not.
 */
export function isLoopbackAddress(address: string): boolean {
  if (address.startsWith("unix:")) return true;
  const at = address.lastIndexOf(":");
  const host = (at < 0 ? address : address.slice(0, at)).replace(/^\[|\]$/g, "");
  if (host === "localhost") return true;
  if (net.isIPv4(host)) return host.startsWith("127.");
  if (net.isIPv6(host)) return host === "::1" || /^::ffff:127\./i.test(host);
  return false;
}

/** What {@link checkControlListen} decides from. */
export interface ControlListen {
  address: string;
  tls: boolean;
  /** The operator's `--insecure`: serve a non-loopback address without TLS anyway. */
  insecure: boolean;
  /** Whether callers present certificates (mutual TLS), so that their roles can be checked. */
  callerCheck: CallerCheck;
  log: Logger;
}

/**
 * Refuses (INVALID_ARGUMENT) a control API on a non-loopback address without TLS: anyone who reaches it
 * would be admin. `--insecure` overrides that, with a warning in the log; so does a non-loopback address
 * on TLS without a client CA (its callers are not identified, so every one of them is admin).
 */
export function checkControlListen(listen: ControlListen): void {
  if (isLoopbackAddress(listen.address)) return;
  if (!listen.tls) {
    if (!listen.insecure) {
      throw new KeelsonError({
        code: "INVALID_ARGUMENT",
        message: `refusing to serve the control API on ${listen.address} without TLS (anyone who reaches it could call anything): give --tls-cert, --tls-key and --tls-client-ca, listen on loopback or a unix: socket, or pass --insecure`,
      });
    }
    listen.log.log("warn", "control API on a non-loopback address without TLS (--insecure): every caller is admin", {
      address: listen.address,
    });
    return;
  }
  if (listen.callerCheck === "none") {
    listen.log.log("warn", "control API on TLS without a client CA: callers are not identified, every caller is admin", {
      address: listen.address,
    });
  }
}
