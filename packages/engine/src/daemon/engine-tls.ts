import fs from "node:fs";
import tls from "node:tls";
import { KeelsonError } from "@keelson/sdk";
import type { CallerCheck } from "../control/roles.js";
import type { EtcdClientTls } from "../metadata/index.js";
import type { NbdTls } from "../nbd/handshake.js";
import { messageOf } from "../util/errors.js";

// TLS of the engine's other edges than the control API: etcd (as a client) and the application NBD listener.

/** PEM files of this node's certificate for an etcd on TLS: the CA etcd's certificate chains to, and the node's own. */
export interface EtcdTlsFiles {
  caFile: string;
  certFile: string;
  keyFile: string;
}

/** PEM files of the NBD TCP listener's TLS; with a client CA, clients must present a certificate it signed. */
export interface NbdTlsFiles {
  certFile: string;
  keyFile: string;
  clientCaFile?: string;
}

/** A PEM file's contents; INVALID_ARGUMENT naming the flag that gave it when it cannot be read. */
export function readPem(file: string, flag: string): Buffer {
  try {
    return fs.readFileSync(file);
  } catch (error) {
    throw new KeelsonError({ code: "INVALID_ARGUMENT", message: `${flag} ${file}: ${messageOf(error)}` });
  }
}

/** The etcd client's credentials from the files; undefined (plaintext) without them. */
export function etcdClientTls(files: EtcdTlsFiles | undefined): EtcdClientTls | undefined {
  if (!files) return undefined;
  return {
    caPem: readPem(files.caFile, "--etcd-ca"),
    certPem: readPem(files.certFile, "--etcd-cert"),
    keyPem: readPem(files.keyFile, "--etcd-key"),
  };
}

/** The NBD listener's TLS from the files (INVALID_ARGUMENT naming a file that cannot be read or used); undefined without them. */
export function nbdServerTls(files: NbdTlsFiles | undefined): NbdTls | undefined {
  if (!files) return undefined;
  const cert = readPem(files.certFile, "--nbd-tls-cert");
  const key = readPem(files.keyFile, "--nbd-tls-key");
  const ca = files.clientCaFile ? readPem(files.clientCaFile, "--nbd-tls-client-ca") : undefined;
  try {
    return { secureContext: tls.createSecureContext({ cert, key, ...(ca ? { ca } : {}) }), requireClientCert: ca !== undefined };
  } catch (error) {
    throw new KeelsonError({
      code: "INVALID_ARGUMENT",
      message: `--nbd-tls-cert ${files.certFile} / --nbd-tls-key ${files.keyFile}: ${messageOf(error)}`,
    });
  }
}

/** Callers' roles are checked when the control API knows them: on mutual TLS (a client CA). */
export function callerCheckOf(controlTls: { clientCaFile?: string } | undefined): CallerCheck {
  return controlTls?.clientCaFile ? "certificate-role" : "none";
}
