// The state file of a local cluster (`DIR/cluster.json`): everything it made,
// so that another process (`keelson down`) can undo it. The file comes from
// outside the reading process, so it is checked field by field when read.

import fs from "node:fs";
import path from "node:path";
import { KeelsonError } from "@keelson/sdk";
import { messageOf } from "../util/errors.js";
import type { HostNetwork } from "./host-network.js";
import type { CertFiles, LocalPki } from "./local-pki.js";

/** One node of a local cluster, as recorded in the state file. */
export interface LocalNodeState {
  index: number;
  nodeId: string;
  zone: string;
  /** The node's own address (namespace address, or 127.0.0.x). */
  address: string;
  grpcAddress: string;
  nbdAddress: string;
  /** NBD on a unix socket: how clients on the node itself reach it (a partition does not cut them off). */
  nbdSocket: string;
  netns: string | null;
  /** The file behind the node's disk, and the loop device on it (netns mode). */
  diskFile: string;
  /** The cluster made the disk file (and removes it); false for a disk a test gave it. */
  ownsDisk: boolean;
  loopDevice: string | null;
  pid: number;
  logFile: string;
}

/**
 * The PKI of a local cluster on TLS (control APIs on mutual TLS, etcd on TLS with client certificates): the
 * CA, the client certificates of the control API's roles (each node's own is `DIR/tls/<nodeId>.pem`), and
 * etcd's server certificate.
 */
export interface LocalClusterTls {
  pki: LocalPki;
  /** OU=admin: the CLI's and `client(i)`'s. */
  admin: CertFiles;
  /** OU=read-only: may Get, List and Watch. */
  readOnly: CertFiles;
  /** etcd's server certificate (OU=etcd: no role on the control API). */
  etcd: CertFiles;
}

/** Everything a local cluster made, so `keelson down` (another process) can undo it. */
export interface LocalClusterState {
  isolation: "netns" | "loopback";
  dir: string;
  network: HostNetwork | null;
  etcd: { pid: number; endpoint: string; peerPort: number; dataDir: string; logFile: string };
  nodes: LocalNodeState[];
  leaseTtlS: number;
  detached: boolean;
  keelsondArgs: string[];
  /** The cluster's PKI when it runs on TLS (see {@link LocalClusterTls}); null: plaintext. */
  tls: LocalClusterTls | null;
}

/** Where the state of the cluster in `dir` is kept. */
export function stateFile(dir: string): string {
  return path.join(dir, "cluster.json");
}

/** The state a local cluster recorded in `dir`; INVALID_ARGUMENT naming the first bad field when the file is not one. */
export function readStateFile(dir: string): LocalClusterState {
  const file = stateFile(dir);
  return parseState(fs.readFileSync(file, "utf8"), file);
}

/** `text` as a cluster state; INVALID_ARGUMENT naming `file` and the first bad field. */
export function parseState(text: string, file: string): LocalClusterState {
  let value: unknown;
  try {
    value = JSON.parse(text);
  } catch (error) {
    throw invalid(file, `not JSON (${messageOf(error)})`);
  }
  assertState(value, file);
  return value;
}

type FieldKind = "string" | "number" | "boolean" | "string|null";

const TOP_FIELDS = { dir: "string", leaseTtlS: "number", detached: "boolean" } as const;
const NETWORK_FIELDS: Record<keyof HostNetwork, FieldKind> = {
  id: "string",
  bridge: "string",
  subnet: "string",
  hostAddress: "string",
};
const ETCD_FIELDS: Record<keyof LocalClusterState["etcd"], FieldKind> = {
  pid: "number",
  endpoint: "string",
  peerPort: "number",
  dataDir: "string",
  logFile: "string",
};
const NODE_FIELDS: Record<keyof LocalNodeState, FieldKind> = {
  index: "number",
  nodeId: "string",
  zone: "string",
  address: "string",
  grpcAddress: "string",
  nbdAddress: "string",
  nbdSocket: "string",
  netns: "string|null",
  diskFile: "string",
  ownsDisk: "boolean",
  loopDevice: "string|null",
  pid: "number",
  logFile: "string",
};
const PKI_FIELDS: Record<keyof LocalPki, FieldKind> = { dir: "string", caFile: "string", caKeyFile: "string" };
const CERT_FIELDS: Record<keyof CertFiles, FieldKind> = { certFile: "string", keyFile: "string" };

function assertState(value: unknown, file: string): asserts value is LocalClusterState {
  const problem = stateProblem(value);
  if (problem !== null) throw invalid(file, problem);
}

function invalid(file: string, problem: string): KeelsonError {
  return new KeelsonError({ code: "INVALID_ARGUMENT", message: `${file} is not a local cluster's state file: ${problem}` });
}

/** The first thing wrong with `value` as a cluster state, or null. Unknown fields are allowed (a newer writer). */
function stateProblem(value: unknown): string | null {
  if (!isRecord(value)) return "not an object";
  if (value.isolation !== "netns" && value.isolation !== "loopback") {
    return `isolation is ${JSON.stringify(value.isolation)}; valid: "netns", "loopback"`;
  }
  return (
    fieldsProblem(value, TOP_FIELDS, "") ??
    (value.network === null ? null : fieldsProblem(value.network, NETWORK_FIELDS, "network")) ??
    fieldsProblem(value.etcd, ETCD_FIELDS, "etcd") ??
    listProblem(value.nodes, "nodes", (node, at) => fieldsProblem(node, NODE_FIELDS, at)) ??
    listProblem(value.keelsondArgs, "keelsondArgs", (arg, at) => (typeof arg === "string" ? null : `${at} is not a string`)) ??
    tlsProblem(value.tls)
  );
}

function tlsProblem(tls: unknown): string | null {
  if (tls === null) return null;
  if (!isRecord(tls)) return "tls is neither null nor an object";
  return (
    fieldsProblem(tls.pki, PKI_FIELDS, "tls.pki") ??
    fieldsProblem(tls.admin, CERT_FIELDS, "tls.admin") ??
    fieldsProblem(tls.readOnly, CERT_FIELDS, "tls.readOnly") ??
    fieldsProblem(tls.etcd, CERT_FIELDS, "tls.etcd")
  );
}

function listProblem(list: unknown, at: string, itemProblem: (item: unknown, at: string) => string | null): string | null {
  if (!Array.isArray(list)) return `${at} is not an array`;
  for (const [i, item] of list.entries()) {
    const problem = itemProblem(item, `${at}[${i}]`);
    if (problem !== null) return problem;
  }
  return null;
}

function fieldsProblem(value: unknown, fields: Readonly<Record<string, FieldKind>>, at: string): string | null {
  if (!isRecord(value)) return `${at || "the state"} is not an object`;
  for (const [key, kind] of Object.entries(fields)) {
    const field = value[key];
    const ok =
      kind === "number"
        ? typeof field === "number" && Number.isFinite(field)
        : kind === "string|null"
          ? field === null || typeof field === "string"
          : typeof field === kind;
    if (!ok) return `${at ? `${at}.` : ""}${key} is ${JSON.stringify(field) ?? "missing"}, not a ${kind}`;
  }
  return null;
}

function isRecord(value: unknown): value is Record<string, unknown> {
  return typeof value === "object" && value !== null && !Array.isArray(value);
}
