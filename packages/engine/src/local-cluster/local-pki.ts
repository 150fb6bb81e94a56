import { execFileSync } from "node:child_process";
import fs from "node:fs";
import path from "node:path";
import { KeelsonError } from "@keelson/sdk";
import { messageOf } from "../util/errors.js";

/** PEM files of one certificate and its key. */
export interface CertFiles {
  certFile: string;
  keyFile: string;
}

/** The CA of a local cluster: nodes and clients get certificates it signs. */
export interface LocalPki {
  dir: string;
  caFile: string;
  caKeyFile: string;
}

function openssl(args: string[]): void {
  try {
    execFileSync("openssl", args, { stdio: ["ignore", "ignore", "pipe"] });
  } catch (error) {
    const stderr = (error as { stderr?: Buffer }).stderr?.toString() ?? "";
    throw new KeelsonError({
      code: "INTERNAL",
      message: `openssl ${args[0]} failed (a local cluster on TLS needs openssl): ${stderr || messageOf(error)}`,
    });
  }
}

const EC_KEY = ["-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes"];

/** A new CA in `dir` (valid 30 days: local clusters are for tests and trials). */
export function createLocalPki(dir: string): LocalPki {
  fs.mkdirSync(dir, { recursive: true, mode: 0o700 });
  const pki = { dir, caFile: path.join(dir, "ca.pem"), caKeyFile: path.join(dir, "ca.key") };
  openssl([
    "req",
    "-x509",
    ...EC_KEY,
    "-days",
    "30",
    "-subj",
    "/CN=keelson local cluster CA",
    "-keyout",
    pki.caKeyFile,
    "-out",
    pki.caFile,
  ]);
  return pki;
}

/**
 * A certificate's subject OU: a control-API role (`Role` of the engine's control/roles.ts, which this
 * harness may not import: it drives keelsond processes, it does not link the engine), or "etcd" for
 * etcd's own certificate, to which the control API grants nothing.
 */
export type CertRole = "admin" | "node" | "read-only" | "etcd";

/** What {@link issueCert} makes. */
export interface CertRequest {
  /** The subject CN (a node's id) and the files' base name in the PKI directory. */
  name: string;
  /** The subject OU: the role the control API grants the holder. */
  role: CertRole;
  /** IP addresses the certificate is valid for as a server; none: a client certificate only. */
  ips: readonly string[];
}

/**
 * A certificate signed by the cluster CA: a server's (a node's, etcd's) is valid for its addresses and for
 * both ends of a connection (engines call each other and etcd), a client's only for calling.
 */
export function issueCert(pki: LocalPki, req: CertRequest): CertFiles {
  const { name, role, ips } = req;
  const at = (ext: string) => path.join(pki.dir, `${name}.${ext}`);
  openssl(["req", ...EC_KEY, "-subj", `/OU=${role}/CN=${name}`, "-keyout", at("key"), "-out", at("csr")]);
  const san = ips.length > 0 ? `subjectAltName=${ips.map((ip) => `IP:${ip}`).join(",")}\n` : "";
  const usage = ips.length > 0 ? "serverAuth,clientAuth" : "clientAuth";
  fs.writeFileSync(at("ext"), `${san}extendedKeyUsage=${usage}\n`);
  openssl([
    "x509",
    "-req",
    "-in",
    at("csr"),
    "-CA",
    pki.caFile,
    "-CAkey",
    pki.caKeyFile,
    "-CAcreateserial",
    "-days",
    "30",
    "-extfile",
    at("ext"),
    "-out",
    at("pem"),
  ]);
  fs.rmSync(at("csr"), { force: true });
  fs.rmSync(at("ext"), { force: true });
  return { certFile: at("pem"), keyFile: at("key") };
}
