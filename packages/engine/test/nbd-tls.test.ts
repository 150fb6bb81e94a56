import crypto from "node:crypto";
import fs from "node:fs";
import path from "node:path";
import { describe, expect, it } from "vitest";
import { createLocalPki, issueCert } from "../src/local-cluster/local-pki.js";
import { startDaemon, tempDir } from "./helpers/daemon.js";
import { canRun } from "./helpers/env.js";
import { RawConnection } from "./helpers/nbd-client.js";
import { run } from "./helpers/process.js";

const MIB = 1024 * 1024;
const NBD_OPT_LIST = 3;
const NBD_OPT_STARTTLS = 5;
const NBD_REP_ACK = 1;
const NBD_REP_ERR_POLICY = 2 ** 31 + 2;
const NBD_REP_ERR_INVALID = 2 ** 31 + 3;
const NBD_REP_ERR_TLS_REQD = 2 ** 31 + 5;

/**
 * A CA, the server's certificate for 127.0.0.1, and client certificate directories in the layout libnbd
 * (`tls-certificates=DIR`) and qemu (`tls-creds-x509,dir=DIR`) read: ca-cert.pem, client-cert.pem, client-key.pem.
 */
function makeCerts(dir: string) {
  const pki = createLocalPki(path.join(dir, "pki"));
  const server = issueCert(pki, { name: "nbd-server", role: "node", ips: ["127.0.0.1"] });
  const client = issueCert(pki, { name: "app", role: "admin", ips: [] });
  const clientDir = path.join(dir, "client");
  fs.mkdirSync(clientDir);
  fs.copyFileSync(pki.caFile, path.join(clientDir, "ca-cert.pem"));
  fs.copyFileSync(client.certFile, path.join(clientDir, "client-cert.pem"));
  fs.copyFileSync(client.keyFile, path.join(clientDir, "client-key.pem"));
  // Trusts the CA but has no certificate of its own.
  const anonymousDir = path.join(dir, "anonymous");
  fs.mkdirSync(anonymousDir);
  fs.copyFileSync(pki.caFile, path.join(anonymousDir, "ca-cert.pem"));
  return { pki, server, clientDir, anonymousDir };
}

describe("NBD over TLS (NBD_OPT_STARTTLS)", () => {
  it("nbdcopy, nbdinfo and qemu-img read and write over TLS with a client certificate; plaintext gets NBD_REP_ERR_TLS_REQD and a client without a certificate is refused", async (t) => {
    if (!canRun({ tools: ["openssl", "nbdinfo", "nbdcopy", "qemu-img"] }, t.task.name)) return t.skip();
    using dir = tempDir("keelson-nbdtls-");
    const at = (f: string) => path.join(dir.path, f);
    const { pki, server, clientDir, anonymousDir } = makeCerts(dir.path);
    await using d = await startDaemon({
      poolPath: at("pool.img"),
      poolSize: "256M",
      dir: dir.path,
      extraArgs: ["--nbd-tls-cert", server.certFile, "--nbd-tls-key", server.keyFile, "--nbd-tls-client-ca", pki.caFile],
    });
    await d.client().createVolume({ name: "data", sizeBytes: 16 * MIB });
    const [host, port] = [
      d.nbdAddress.slice(0, d.nbdAddress.lastIndexOf(":")),
      d.nbdAddress.slice(d.nbdAddress.lastIndexOf(":") + 1),
    ];
    const nbds = (certs: string) => `nbds://${host}:${port}/data?tls-certificates=${certs}`;

    // nbdcopy writes random bytes over TLS and reads the same bytes back.
    const src = at("src.bin");
    fs.writeFileSync(src, crypto.randomBytes(16 * MIB));
    await run("nbdcopy", [src, nbds(clientDir)], { timeoutMs: 60_000 });
    const back = at("back.bin");
    await run("nbdcopy", [nbds(clientDir), back], { timeoutMs: 60_000 });
    expect(fs.readFileSync(back).equals(fs.readFileSync(src))).toBe(true);

    // nbdinfo sees the export and that the connection is on TLS.
    const info = JSON.parse((await run("nbdinfo", ["--json", nbds(clientDir)])).stdout) as {
      TLS: boolean;
      exports: Array<{ "export-size": number }>;
    };
    expect(info.TLS).toBe(true);
    expect(info.exports[0]?.["export-size"]).toBe(16 * MIB);

    // qemu-img with x509 credentials: converts the export to a file, which holds the bytes nbdcopy wrote.
    const qemuOpts = ["--object", `tls-creds-x509,id=tls0,dir=${clientDir},endpoint=client`];
    const image = `driver=nbd,host=${host},port=${port},export=data,tls-creds=tls0`;
    const qinfo = await run("qemu-img", ["info", "--output=json", ...qemuOpts, "--image-opts", image], { timeoutMs: 60_000 });
    expect((JSON.parse(qinfo.stdout) as { "virtual-size": number })["virtual-size"]).toBe(16 * MIB);
    await run("qemu-img", ["convert", "-O", "raw", ...qemuOpts, "--image-opts", image, at("qemu.raw")], { timeoutMs: 60_000 });
    expect(fs.readFileSync(at("qemu.raw")).equals(fs.readFileSync(src))).toBe(true);

    // Plaintext: nbdinfo cannot connect; a raw client's LIST gets NBD_REP_ERR_TLS_REQD, then STARTTLS its ACK.
    expect((await run("nbdinfo", [`nbd://${d.nbdAddress}/data`], { allowFail: true })).code).not.toBe(0);
    const raw = await RawConnection.connect(d.nbdAddress);
    try {
      await raw.greet();
      raw.sendOption(NBD_OPT_LIST);
      expect((await raw.optionReply())?.type).toBe(NBD_REP_ERR_TLS_REQD);
      raw.sendOption(NBD_OPT_STARTTLS);
      expect((await raw.optionReply())?.type).toBe(NBD_REP_ACK);
    } finally {
      raw.close();
    }

    // STARTTLS with data is invalid; bytes sent behind STARTTLS before its ACK (plaintext that would be read as if it had
    // come over TLS: the STARTTLS injection of other protocols) end the connection after the ACK.
    const eager = await RawConnection.connect(d.nbdAddress);
    try {
      await eager.greet();
      eager.sendOption(NBD_OPT_STARTTLS, Buffer.from("x"));
      expect((await eager.optionReply())?.type).toBe(NBD_REP_ERR_INVALID);
      const starttls = Buffer.alloc(16);
      Buffer.from("IHAVEOPT").copy(starttls, 0);
      starttls.writeUInt32BE(NBD_OPT_STARTTLS, 8);
      const injected = Buffer.alloc(16);
      Buffer.from("IHAVEOPT").copy(injected, 0);
      injected.writeUInt32BE(NBD_OPT_LIST, 8);
      eager.write(Buffer.concat([starttls, injected]));
      expect((await eager.optionReply())?.type).toBe(NBD_REP_ACK);
      expect(await eager.waitClosed()).toBe(true);
    } finally {
      eager.close();
    }

    // TLS without a client certificate: the server requires one.
    const anonymous = await run("nbdinfo", [nbds(anonymousDir)], { allowFail: true, timeoutMs: 30_000 });
    expect(anonymous.code).not.toBe(0);

    // The unix socket stays plaintext (this host only), and answers STARTTLS with NBD_REP_ERR_POLICY.
    const overUnix = await RawConnection.connect(d.nbdSocket);
    try {
      await overUnix.greet();
      overUnix.sendOption(NBD_OPT_STARTTLS);
      expect((await overUnix.optionReply())?.type).toBe(NBD_REP_ERR_POLICY);
      expect(await overUnix.go("data")).toBe(16 * MIB);
    } finally {
      overUnix.close();
    }
  }, 180_000);

  it("without TLS configured, STARTTLS gets NBD_REP_ERR_POLICY and negotiation goes on in plaintext", async () => {
    using dir = tempDir("keelson-nbdplain-");
    await using d = await startDaemon({ poolPath: path.join(dir.path, "pool.img"), poolSize: "64M", dir: dir.path });
    await d.client().createVolume({ name: "v", sizeBytes: 4 * MIB });
    const raw = await RawConnection.connect(d.nbdAddress);
    try {
      await raw.greet();
      raw.sendOption(NBD_OPT_STARTTLS);
      expect((await raw.optionReply())?.type).toBe(NBD_REP_ERR_POLICY);
      expect(await raw.go("v")).toBe(4 * MIB);
    } finally {
      raw.close();
    }
  });
});
