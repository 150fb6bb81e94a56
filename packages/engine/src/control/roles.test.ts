import { execFileSync } from "node:child_process";
import { X509Certificate } from "node:crypto";
import fs from "node:fs";
import os from "node:os";
import path from "node:path";
import { isKeelsonError } from "@keelson/sdk";
import { describe, expect, it } from "vitest";
import { authorizeCall, identityOfCertificate, ROLES, RPC_ROLES, type RpcName } from "./roles.js";

/** The keelson code `fn` throws ("ok" when it does not). */
function codeOf(fn: () => unknown): string {
  try {
    fn();
    return "ok";
  } catch (error) {
    return isKeelsonError(error) ? error.code : String(error);
  }
}

describe("identityOfCertificate", () => {
  it("reads the role from OU and the name from CN (TLS peer certificate fields)", () => {
    expect(identityOfCertificate({ subject: { OU: "node", CN: "node2" } } as never)).toEqual({ role: "node", name: "node2" });
    expect(identityOfCertificate({ subject: { OU: "read-only", CN: "grafana" } } as never)).toEqual({
      role: "read-only",
      name: "grafana",
    });
  });

  it("no role: OU missing, unknown, given twice, or no CN; no certificate at all", () => {
    expect(identityOfCertificate({ subject: { CN: "app" } } as never)).toBeNull();
    expect(identityOfCertificate({ subject: { OU: "etcd", CN: "etcd" } } as never)).toBeNull();
    expect(identityOfCertificate({ subject: { OU: "Admin", CN: "x" } } as never)).toBeNull();
    expect(identityOfCertificate({ subject: { OU: ["admin", "node"], CN: "x" } } as never)).toBeNull();
    expect(identityOfCertificate({ subject: { OU: "admin" } } as never)).toBeNull();
    expect(identityOfCertificate(undefined)).toBeNull();
    expect(identityOfCertificate(null)).toBeNull();
  });

  it("reads an X509Certificate's subject text the same way", () => {
    const dir = fs.mkdtempSync(path.join(os.tmpdir(), "keelson-roles-"));
    try {
      const at = (f: string) => path.join(dir, f);
      execFileSync(
        "openssl",
        [
          ...["req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes", "-days", "1"],
          ...["-subj", "/O=keelson/OU=admin/CN=ops", "-keyout", at("k.pem"), "-out", at("c.pem")],
        ],
        { stdio: "ignore" },
      );
      const cert = new X509Certificate(fs.readFileSync(at("c.pem")));
      expect(identityOfCertificate(cert)).toEqual({ role: "admin", name: "ops" });
    } finally {
      fs.rmSync(dir, { recursive: true, force: true });
    }
  });
});

describe("authorizeCall", () => {
  const cert = (OU: string) => ({ subject: { OU, CN: "someone" } }) as never;

  it("without mutual TLS every caller is admin", () => {
    expect(authorizeCall("none", "CreateVolume", undefined)).toEqual({ role: "admin", name: "" });
  });

  it("read-only may call the Get, List and Watch calls and nothing else", () => {
    for (const method of Object.keys(RPC_ROLES) as RpcName[]) {
      const reads = /^(Get|List|Watch)/.test(method);
      expect(
        codeOf(() => authorizeCall("certificate-role", method, cert("read-only"))),
        method,
      ).toBe(reads ? "ok" : "PERMISSION_DENIED");
    }
  });

  it("admin may call everything but FenceVolume, which only engines call", () => {
    for (const method of Object.keys(RPC_ROLES) as RpcName[]) {
      expect(
        codeOf(() => authorizeCall("certificate-role", method, cert("admin"))),
        method,
      ).toBe(method === "FenceVolume" ? "PERMISSION_DENIED" : "ok");
    }
  });

  it("node may call what engines call on each other, and not an operator's calls", () => {
    for (const method of ["CreateVolume", "FenceVolume", "AttachVolume", "DeleteSnapshot", "GetSnapshotChanges"] as const) {
      expect(
        codeOf(() => authorizeCall("certificate-role", method, cert("node"))),
        method,
      ).toBe("ok");
    }
    for (const method of ["DeclareInSync", "SetDiskCapability", "SetVolumeQos", "RevertVolume"] as const) {
      expect(
        codeOf(() => authorizeCall("certificate-role", method, cert("node"))),
        method,
      ).toBe("PERMISSION_DENIED");
    }
  });

  it("a refusal names the caller, its role and the roles allowed; a certificate without a role lists the valid ones", () => {
    expect(() => authorizeCall("certificate-role", "DeclareInSync", cert("read-only"))).toThrow(
      'DeclareInSync: "someone" has role read-only; allowed: admin',
    );
    expect(() => authorizeCall("certificate-role", "GetNode", { subject: { CN: "x" } } as never)).toThrow(
      `OU must be one of ${ROLES.join(", ")}`,
    );
  });
});
