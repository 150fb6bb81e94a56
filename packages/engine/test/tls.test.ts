import { spawn } from "node:child_process";
import fs from "node:fs";
import { createRequire } from "node:module";
import path from "node:path";
import { credentials } from "@grpc/grpc-js";
import { createClient } from "@keelson/sdk";
import { describe, expect, it } from "vitest";
import { startDaemon, tempDir } from "./helpers/daemon.js";
import { canRun } from "./helpers/env.js";
import { codeOf } from "./helpers/errors.js";
import { run, waitExit } from "./helpers/process.js";

/** The built SDK's entry, for a probe process run inside a network namespace. */
function sdkEntry(): string {
  return createRequire(import.meta.url).resolve("@keelson/sdk");
}

/**
 * A CA, and a certificate it signs (for 127.0.0.1 when it is a server's), with subject OU `role` when given
 * (the control API's role of the holder).
 */
async function makePki(
  dir: string,
  name: string,
): Promise<{ ca: string; cert: (who: string, server: boolean, role?: string) => Promise<void> }> {
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
    cert: async (who, server, role) => {
      await run("openssl", [
        "req",
        "-newkey",
        "ec",
        "-pkeyopt",
        "ec_paramgen_curve:prime256v1",
        "-nodes",
        "-subj",
        role ? `/OU=${role}/CN=${who}` : `/CN=${who}`,
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
    await pki.cert("app", false, "admin");
    await other.cert("intruder", false, "admin");
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

  it("mutual TLS: each call is checked against the caller certificate's role (OU): read-only may read but not create, node may not call an operator's RPC, admin may not fence, a certificate without a role may call nothing", async (t) => {
    if (!canRun({ tools: ["openssl"] }, t.task.name)) return t.skip();
    using dir = tempDir("keelson-roles-");
    const at = (f: string) => path.join(dir.path, f);
    const pki = await makePki(dir.path, "ca");
    await pki.cert("server", true, "node");
    await pki.cert("ops", false, "admin");
    await pki.cert("dashboard", false, "read-only");
    await pki.cert("node7", false, "node");
    await pki.cert("no-role", false);
    await pki.cert("etcd", false, "etcd");
    await using d = await startDaemon({
      poolPath: at("roles.img"),
      poolSize: "64M",
      dir: dir.path,
      extraArgs: ["--tls-cert", at("server.pem"), "--tls-key", at("server.key"), "--tls-client-ca", at("ca.pem")],
    });
    const ca = fs.readFileSync(at("ca.pem"));
    const clients: ReturnType<typeof createClient>[] = [];
    const as = (who: string) => {
      const c = createClient({
        address: d.grpcAddress,
        credentials: credentials.createSsl(ca, fs.readFileSync(at(`${who}.key`)), fs.readFileSync(at(`${who}.pem`))),
        maxAttempts: 1,
        defaultTimeoutMs: 5_000,
      });
      clients.push(c);
      return c;
    };
    try {
      const admin = as("ops");
      const readOnly = as("dashboard");
      const node = as("node7");
      const noRole = as("no-role");
      const etcd = as("etcd");
      const MIB = 2 ** 20;
      // admin creates; read-only reads the same volume back, but may not create, resize or delete.
      await admin.createVolume({ name: "v", sizeBytes: 8 * MIB });
      expect((await readOnly.getVolume({ name: "v" })).sizeBytes).toBe(8 * MIB);
      expect((await readOnly.listVolumes()).map((v) => v.name)).toEqual(["v"]);
      expect(await codeOf(readOnly.createVolume({ name: "ro-made", sizeBytes: 8 * MIB }))).toBe("PERMISSION_DENIED");
      expect(await codeOf(readOnly.resizeVolume({ name: "v", sizeBytes: 16 * MIB }))).toBe("PERMISSION_DENIED");
      expect(await codeOf(readOnly.deleteVolume({ name: "v" }))).toBe("PERMISSION_DENIED");
      // node: what engines call on each other (create a replica, fence it), not an operator's calls.
      await node.createVolume({ name: "replica", sizeBytes: 8 * MIB });
      // FenceVolume passes a node's role check; a single engine then refuses it (epochs come from a cluster's etcd).
      expect(await codeOf(node.fenceVolume({ name: "replica", epoch: 1 }))).toBe("INVALID_ARGUMENT");
      expect(await codeOf(node.setDiskCapability({ iops: 1000, bytesPerSec: MIB }))).toBe("PERMISSION_DENIED");
      expect(await codeOf(node.declareInSync({ name: "replica", nodeId: "node7", reason: "x" }))).toBe("PERMISSION_DENIED");
      expect(await codeOf(node.setVolumeQos({ name: "replica", qos: { limits: { totalIops: { rate: 10 } } } }))).toBe(
        "PERMISSION_DENIED",
      );
      // admin: everything but the engine-internal FenceVolume.
      expect(await codeOf(admin.fenceVolume({ name: "replica", epoch: 2 }))).toBe("PERMISSION_DENIED");
      expect((await readOnly.getVolume({ name: "replica" })).epoch).toBe(0);
      await admin.setVolumeQos({ name: "v", qos: { limits: { totalIops: { rate: 500 } } } });
      // A certificate the CA signed without a keelson role (none, or etcd's) may call nothing, not even a read.
      expect(await codeOf(noRole.getNode())).toBe("PERMISSION_DENIED");
      expect(await codeOf(etcd.listVolumes())).toBe("PERMISSION_DENIED");
      // Watch is checked too, before anything else: a reader is told it needs a cluster, a certificate without a role is refused.
      const firstEvent = (c: typeof admin) => c.watch().next();
      expect(await codeOf(firstEvent(readOnly))).toBe("INVALID_ARGUMENT");
      expect(await codeOf(firstEvent(noRole))).toBe("PERMISSION_DENIED");
      expect((await admin.listVolumes()).map((v) => v.name).sort()).toEqual(["replica", "v"]);
      expect(d.log()).toContain("PERMISSION_DENIED");
    } finally {
      for (const c of clients) c.close();
    }
  }, 120_000);

  it("a control API on a non-loopback address without TLS is refused (INVALID_ARGUMENT, exit 1) unless --insecure, which logs a warning", async (t) => {
    if (!canRun({ root: true, tools: ["ip"] }, t.task.name)) return t.skip();
    using dir = tempDir("keelson-bind-");
    const at = (f: string) => path.join(dir.path, f);
    // A namespace of this test's own with one non-loopback address, so nothing listens on the host's interfaces.
    const ns = `kb-bind-${process.pid}`;
    await run("ip", ["netns", "add", ns]);
    try {
      const inNs = (cmd: string[]) => run("ip", ["netns", "exec", ns, ...cmd]);
      // Both ends of the pair stay in the namespace (deleting it removes them); no dummy module needed.
      await inNs(["ip", "link", "add", "kb0", "type", "veth", "peer", "name", "kb1"]);
      await inNs(["ip", "addr", "add", "10.251.0.1/24", "dev", "kb0"]);
      await inNs(["ip", "link", "set", "kb0", "up"]);
      await inNs(["ip", "link", "set", "kb1", "up"]);
      await inNs(["ip", "link", "set", "lo", "up"]);
      const keelsond = path.resolve(path.dirname(new URL(import.meta.url).pathname), "../dist/cli/keelsond.js");
      const args = [keelsond, "--pool", at("bind.img"), "--pool-size", "64M", "--nbd-listen", "", "--disk-capability", "1000:1G"];
      const refused = await run("ip", ["netns", "exec", ns, process.execPath, ...args, "--grpc-listen", "10.251.0.1:0"], {
        allowFail: true,
        timeoutMs: 20_000,
      });
      expect(refused.code).toBe(1);
      expect(refused.stderr).toContain('"code":"INVALID_ARGUMENT"');
      expect(refused.stderr).toContain("refusing to serve the control API on 10.251.0.1:0 without TLS");
      // Refused before the pool was made.
      expect(fs.existsSync(at("bind.img"))).toBe(false);
      // --insecure: it serves there (a real call round trip through the namespace), and says so in the log.
      const ready = at("ready.json");
      const insecure = ["netns", "exec", ns, process.execPath, ...args, "--grpc-listen", "10.251.0.1:0", "--insecure"];
      const child = spawn("ip", [...insecure, "--ready-file", ready], { stdio: ["ignore", "ignore", "pipe"] });
      let log = "";
      child.stderr?.on("data", (b: Buffer) => {
        log += b.toString();
      });
      try {
        const started = Date.now();
        while (!fs.existsSync(ready) && child.exitCode === null && Date.now() - started < 20_000) {
          await new Promise((r) => setTimeout(r, 50));
        }
        expect(fs.existsSync(ready), log).toBe(true);
        const { grpcAddress } = JSON.parse(fs.readFileSync(ready, "utf8")) as { grpcAddress: string };
        expect(grpcAddress).toMatch(/^10\.251\.0\.1:\d+$/);
        expect(log).toContain("without TLS (--insecure)");
        const probe = `const {createClient}=await import(${JSON.stringify(sdkEntry())});const c=createClient({address:${JSON.stringify(grpcAddress)},maxAttempts:1});const n=await c.getNode();console.log(n.pool.totalBytes);c.close();`;
        const out = await inNs([process.execPath, "--input-type=module", "-e", probe]);
        expect(Number(out.stdout.trim())).toBeGreaterThan(0);
      } finally {
        child.kill("SIGTERM");
        await waitExit(child, 15_000);
        if (child.exitCode === null && child.signalCode === null) child.kill("SIGKILL");
      }
    } finally {
      await run("ip", ["netns", "del", ns], { allowFail: true });
    }
  }, 120_000);
});
