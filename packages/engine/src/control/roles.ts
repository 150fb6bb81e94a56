import type { X509Certificate } from "node:crypto";
import type { PeerCertificate } from "node:tls";
import { KeelsonError } from "@keelson/sdk";

/**
 * Who may call what on the control API when it runs on mutual TLS. A client certificate's subject carries
 * its caller's role in OU and its name in CN (a node's certificate: OU=node, CN=<node id>). Without mutual
 * TLS (loopback or a unix socket, or TLS without a client CA) no caller proves who it is, and every caller
 * is admin: such an API must only be reachable by those trusted as admins.
 */
export type Role = "admin" | "node" | "read-only";

/** Every role, in the order error messages list them. */
export const ROLES: readonly Role[] = ["admin", "node", "read-only"];

/** The caller a certificate names. */
export interface CallerIdentity {
  role: Role;
  /** The certificate's CN: a node's id, an operator's or tool's name. */
  name: string;
}

/** What {@link identityOfCertificate} reads: a TLS peer certificate (subject fields) or a node:crypto X509Certificate (subject text). */
export type CertificateLike = Pick<PeerCertificate, "subject"> | Pick<X509Certificate, "subject">;

/** The single value of a subject field: a field given twice is ambiguous, so it counts as missing. */
function single(value: string | string[] | undefined): string | undefined {
  if (Array.isArray(value)) return value.length === 1 ? value[0] : undefined;
  return value;
}

/** Subject fields from X509Certificate's text form, one `KEY=value` a line (a repeated key becomes a list). */
function parseSubject(text: string): Record<string, string | string[]> {
  const fields: Record<string, string | string[]> = {};
  for (const line of text.split("\n")) {
    const at = line.indexOf("=");
    if (at <= 0) continue;
    const key = line.slice(0, at);
    const value = line.slice(at + 1);
    const had = fields[key];
    fields[key] = had === undefined ? value : [...(Array.isArray(had) ? had : [had]), value];
  }
  return fields;
}

function isRole(value: string | undefined): value is Role {
  return value !== undefined && (ROLES as readonly string[]).includes(value);
}

/**
 * The role (subject OU) and name (subject CN) a client certificate names; null when it has no single OU
 * that is a role, or no CN: such a certificate may call nothing (it may be signed by the CA for something
 * else, such as etcd's server certificate).
 */
export function identityOfCertificate(cert: CertificateLike | null | undefined): CallerIdentity | null {
  if (!cert?.subject) return null;
  const subject = typeof cert.subject === "string" ? parseSubject(cert.subject) : cert.subject;
  const role = single(subject.OU);
  const name = single(subject.CN);
  if (!isRole(role) || !name) return null;
  return { role, name };
}

const ADMIN: readonly Role[] = ["admin"];
/** Calls that change nothing: Get, List, Watch. */
const READ: readonly Role[] = ["admin", "node", "read-only"];
/** Calls an operator makes and engines make on each other (forwarded attach, placement, replica copies). */
const ADMIN_AND_NODE: readonly Role[] = ["admin", "node"];
/**
 * Engine-internal calls. FenceVolume raises a replica's epoch: an operator takes a volume over with
 * AttachVolume --takeover, which fences through the engines, and a fence from outside the attach
 * protocol would cut off a healthy writer. No operator tool calls it, so admin may not either.
 */
const NODE: readonly Role[] = ["node"];

/**
 * The roles that may call each RPC of keelson.v1 (by its method name in the .proto). Engines call each
 * other's CreateVolume, GetVolume, DeleteVolume, ResizeVolume, FenceVolume, AttachVolume, DetachVolume,
 * CreateSnapshot, GetSnapshot, ListSnapshots, DeleteSnapshot, GetSnapshotChanges and GetNode (every
 * `PeerDialer.withPeer` in cluster/); the read-only calls are open to every role.
 */
export const RPC_ROLES = {
  CreateVolume: ADMIN_AND_NODE,
  GetVolume: READ,
  ListVolumes: READ,
  DeleteVolume: ADMIN_AND_NODE,
  ResizeVolume: ADMIN_AND_NODE,
  RevertVolume: ADMIN,
  SetVolumeQos: ADMIN,
  FenceVolume: NODE,
  AttachVolume: ADMIN_AND_NODE,
  GetAttachment: READ,
  DetachVolume: ADMIN_AND_NODE,
  ListAttachments: READ,
  DeclareInSync: ADMIN,
  CreateSnapshot: ADMIN_AND_NODE,
  GetSnapshot: READ,
  ListSnapshots: READ,
  DeleteSnapshot: ADMIN_AND_NODE,
  GetSnapshotChanges: READ,
  GetNode: READ,
  SetDiskCapability: ADMIN,
  ListNodes: READ,
  Watch: READ,
} as const satisfies Record<string, readonly Role[]>;

/** An RPC of the control API, as {@link RPC_ROLES} names it. */
export type RpcName = keyof typeof RPC_ROLES;

/** Whether the control API checks its callers' roles: only with mutual TLS can it know them. */
export type CallerCheck = "none" | "certificate-role";

/**
 * The caller's identity when it may call `method`; PERMISSION_DENIED naming the certificate, its role and
 * the roles allowed otherwise. With `check` "none" every caller is admin.
 */
export function authorizeCall(check: CallerCheck, method: RpcName, cert: CertificateLike | null | undefined): CallerIdentity {
  if (check === "none") return { role: "admin", name: "" };
  const identity = identityOfCertificate(cert);
  const allowed = RPC_ROLES[method];
  if (!identity) {
    throw new KeelsonError({
      code: "PERMISSION_DENIED",
      message: `${method}: the client certificate names no role (its subject OU must be one of ${ROLES.join(", ")})`,
    });
  }
  if (!(allowed as readonly Role[]).includes(identity.role)) {
    throw new KeelsonError({
      code: "PERMISSION_DENIED",
      message: `${method}: ${JSON.stringify(identity.name)} has role ${identity.role}; allowed: ${allowed.join(", ")}`,
    });
  }
  return identity;
}
