// A node's liveness lease on a connection that stops answering: CI runs saw a node just started whose
// keepalives went unanswered for seconds while etcd and every other node were fine, and the node was
// marked down. Here a proxy between the node and etcd freezes every connection it carries at one
// moment (no byte passes either way; new connections still work): the lease must survive on a new
// connection. The keepalives used to stay on the frozen one, and the lease lapsed after its TTL.
import { type ChildProcess, spawn } from "node:child_process";
import fs from "node:fs";
import net from "node:net";
import os from "node:os";
import path from "node:path";
import { describe, expect, it } from "vitest";
import { freePort, waitForPort } from "../src/local-cluster/local-process.js";
import { EtcdMetadataStore } from "../src/metadata/etcd-store.js";
import { refs } from "../src/metadata/index.js";
import { canRun } from "./helpers/env.js";
import { waitExit } from "./helpers/process.js";

/** A TCP proxy to `target` that can freeze the connections open now (they stay open and carry nothing). */
async function freezingProxy(target: number): Promise<{ port: number; freeze(): number; close(): void }> {
  const live = new Set<{ client: net.Socket; upstream: net.Socket }>();
  const server = net.createServer((client) => {
    const upstream = net.connect(target, "127.0.0.1");
    const pair = { client, upstream };
    live.add(pair);
    client.pipe(upstream);
    upstream.pipe(client);
    const drop = () => {
      live.delete(pair);
      client.destroy();
      upstream.destroy();
    };
    client.on("error", drop);
    upstream.on("error", drop);
    client.on("close", drop);
    upstream.on("close", drop);
  });
  await new Promise<void>((r) => server.listen(0, "127.0.0.1", r));
  const frozen: net.Socket[] = [];
  return {
    port: (server.address() as net.AddressInfo).port,
    freeze: () => {
      for (const { client, upstream } of live) {
        client.unpipe(upstream);
        upstream.unpipe(client);
        client.pause();
        upstream.pause();
        frozen.push(client, upstream);
      }
      const n = live.size;
      live.clear();
      return n;
    },
    close: () => {
      for (const s of frozen) s.destroy();
      for (const { client, upstream } of live) {
        client.destroy();
        upstream.destroy();
      }
      server.close();
    },
  };
}

describe("liveness lease", () => {
  it("survives the connection its keepalives use going silent: the next keepalive goes on a new connection", async (t) => {
    if (!canRun({ tools: ["etcd"] }, t.task.name)) return t.skip();
    const dir = fs.mkdtempSync(path.join(os.tmpdir(), "keelson-keepalive-"));
    const [client, peer] = [await freePort("127.0.0.1"), await freePort("127.0.0.1")];
    let etcd: ChildProcess | null = spawn(
      "etcd",
      [
        ...["--data-dir", path.join(dir, "data"), "--listen-client-urls", `http://127.0.0.1:${client}`],
        ...["--advertise-client-urls", `http://127.0.0.1:${client}`, "--listen-peer-urls", `http://127.0.0.1:${peer}`],
        ...["--initial-advertise-peer-urls", `http://127.0.0.1:${peer}`, "--initial-cluster", `default=http://127.0.0.1:${peer}`],
      ],
      { stdio: "ignore" },
    );
    const proxy = await freezingProxy(client);
    const direct = EtcdMetadataStore.connect(`http://127.0.0.1:${client}`);
    const node = EtcdMetadataStore.connect(`http://127.0.0.1:${proxy.port}`);
    try {
      await waitForPort("127.0.0.1", client, 10_000);
      const lost: unknown[] = [];
      const registration = await node.register("node9", 2, {
        lost: (e) => lost.push(e),
        elected: () => undefined,
        campaignFailed: () => undefined,
      });
      await new Promise((r) => setTimeout(r, 1_000));
      expect(proxy.freeze()).toBeGreaterThan(0);
      // Twice the TTL: a lease kept on the frozen connection has lapsed by now.
      await new Promise((r) => setTimeout(r, 4_000));
      expect(lost).toEqual([]);
      expect(await direct.get(refs.alive("node9"))).not.toBeNull();
      await registration.release();
    } finally {
      node.close();
      direct.close();
      proxy.close();
      etcd?.kill("SIGKILL");
      if (etcd) await waitExit(etcd).catch(() => undefined);
      etcd = null;
      fs.rmSync(dir, { recursive: true, force: true });
    }
  }, 30_000);
});
