import fs from "node:fs";
import path from "node:path";
import { credentials } from "@grpc/grpc-js";
import { createClient } from "@keelson/sdk";
import { describe, expect, it } from "vitest";
import { startDaemon, tempDir } from "./helpers/daemon.js";
import { canRun } from "./helpers/env.js";
import { codeOf } from "./helpers/errors.js";
import { run } from "./helpers/process.js";

/** A CA, and a certificate it signs (for 127.0.0.1 when it is a server's). */
async function makePki(
  dir: string,
  name: string,
): Promise<{ ca: string; cert: (who: string, server: boolean) => Promise<void> }> {
  const at = (f: string) => path.join(dir, f);
  await run("openssl", [
    "req",
    "-x509",
    "-newkey",
    "ec",
    "-pkeyopt",
    "ec_paramgen_curve:prime256v1",
    "-nodes",
    "-days",
    "2",
    "-subj",
    `/CN=${name}`,
    "-keyout",
    at(`${name}.key`),
    "-out",
    at(`${name}.pem`),
  ]);
  return {
    ca: at(`${name}.pem`),
    cert: async (who, server) => {
      await run("openssl", [
        "req",
        "-newkey",
        "ec",
        "-pkeyopt",
        "ec_paramgen_curve:prime256v1",
        "-nodes",
        "-subj",
        `/CN=${who}`,
        "-keyout",
        at(`${who}.key`),
        "-out",
        at(`${who}.csr`),
      ]);
      const ext = at(`${who}.ext`);
      fs.writeFileSync(
        ext,
        server ? "subjectAltName=IP:127.0.0.1\nextendedKeyUsage=serverAuth\n" : "extendedKeyUsage=clientAuth\n",
      );
      await run("openssl", [
        "x509",
        "-req",
        "-in",
        at(`${who}.csr`),
        "-CA",
        at(`${name}.pem`),
        "-CAkey",
        at(`${name}.key`),
        "-CAcreateserial",
        "-days",
        "2",
        "-extfile",
        ext,
        "-out",
        at(`${who}.pem`),
      ]);
    },
  };
}

describe("control API over TLS", () => {
  it("TLS and mutual TLS: the SDK connects with the right CA (and client certificate); plaintext, a wrong CA or a missing or foreign client certificate get UNAVAILABLE; bad flags are refused", async (t) => {
    if (!canRun({ tools: ["openssl"] }, t.task.name)) return t.skip();
    using dir = tempDir("keelson-tls-");
    const at = (f: string) => path.join(dir.path, f);
    const pki = await makePki(dir.path, "ca");
    const other = await makePki(dir.path, "other-ca");
    await pki.cert("server", true);
    await pki.cert("app", false);
    await other.cert("intruder", false);
    const read = (f: string) => fs.readFileSync(at(f));
    const quick = { maxAttempts: 1, defaultTimeoutMs: 3_000 };

    // TLS: the server proves itself; any client may call.
    {
      await using d = await startDaemon({
        poolPath: at("tls.img"),
        poolSize: "64M",
        dir: dir.path,
        extraArgs: ["--tls-cert", at("server.pem"), "--tls-key", at("server.key")],
      });
      const good = createClient({ address: d.grpcAddress, credentials: credentials.createSsl(read("ca.pem")), ...quick });
      expect((await good.getNode()).pool.totalBytes).toBeGreaterThan(0);
      good.close();
      const plain = createClient({ address: d.grpcAddress, ...quick });
      expect(await codeOf(plain.getNode())).toBe("UNAVAILABLE");
      plain.close();
      const wrongCa = createClient({
        address: d.grpcAddress,
        credentials: credentials.createSsl(read("other-ca.pem")),
        ...quick,
      });
      expect(await codeOf(wrongCa.getNode())).toBe("UNAVAILABLE");
      wrongCa.close();
    }

    // Mutual TLS: only clients with a certificate from the client CA.
    {
      await using d = await startDaemon({
        poolPath: at("mtls.img"),
        poolSize: "64M",
        dir: dir.path,
        extraArgs: ["--tls-cert", at("server.pem"), "--tls-key", at("server.key"), "--tls-client-ca", at("ca.pem")],
      });
      const ca = read("ca.pem");
      const app = createClient({
        address: d.grpcAddress,
        credentials: credentials.createSsl(ca, read("app.key"), read("app.pem")),
        ...quick,
      });
      await app.createVolume({ name: "over-mtls", sizeBytes: 8 * 2 ** 20 });
      expect((await app.listVolumes()).map((v) => v.name)).toEqual(["over-mtls"]);
      app.close();
      const anonymous = createClient({ address: d.grpcAddress, credentials: credentials.createSsl(ca), ...quick });
      expect(await codeOf(anonymous.getNode())).toBe("UNAVAILABLE");
      anonymous.close();
      const intruder = createClient({
        address: d.grpcAddress,
        credentials: credentials.createSsl(ca, read("intruder.key"), read("intruder.pem")),
        ...quick,
      });
      expect(await codeOf(intruder.getNode())).toBe("UNAVAILABLE");
      intruder.close();
    }

    // A certificate without its key, an unreadable file, a cluster on TLS without the cluster CA: refused at start.
    const keelsond = path.resolve(path.dirname(new URL(import.meta.url).pathname), "../dist/cli/keelsond.js");
    const start = (extra: string[]) =>
      run(
        process.execPath,
        [keelsond, "--pool", at("bad.img"), "--pool-size", "64M", "--grpc-listen", "127.0.0.1:0", "--nbd-listen", "", ...extra],
        {
          allowFail: true,
          timeoutMs: 20_000,
        },
      );
    const noKey = await start(["--tls-cert", at("server.pem")]);
    expect(noKey.code).not.toBe(0);
    expect(noKey.stderr).toContain("--tls-cert and --tls-key must be given together");
    const missing = await start(["--tls-cert", at("nope.pem"), "--tls-key", at("server.key")]);
    expect(missing.code).not.toBe(0);
    expect(missing.stderr).toContain("nope.pem");
    const cluster = await start(["--tls-cert", at("server.pem"), "--tls-key", at("server.key"), "--etcd", "http://127.0.0.1:1"]);
    expect(cluster.code).not.toBe(0);
    expect(cluster.stderr).toContain("a cluster on TLS needs --tls-client-ca");
  }, 120_000);
});
