// etcd that stops answering or is not up yet: every unary etcd call has a
// deadline, so an etcd paused (SIGSTOP) after the connection was made fails
// the call with a typed error instead of hanging it and everything queued
// behind it; and a node that starts before etcd does joins once etcd is up
// instead of failing its start.
import { type ChildProcess, spawn } from "node:child_process";
import fs from "node:fs";
import os from "node:os";
import path from "node:path";
import { KeelsonError } from "@keelson/sdk";
import { describe, expect, it } from "vitest";
import { ClusterMembership } from "../src/cluster/membership.js";
import { PeerDialer } from "../src/cluster/peer-dialer.js";
import { freePort, waitForPort } from "../src/local-cluster/local-process.js";
import { ETCD_CALL_DEADLINE_MS, EtcdMetadataStore } from "../src/metadata/etcd-store.js";
import { refs } from "../src/metadata/index.js";
import { canRun } from "./helpers/env.js";
import { waitExit } from "./helpers/process.js";

/** Ports and data directory of one test's etcd; `start` may be called later than the ports are known. */
async function etcdPlan(dir: string): Promise<{ url: string; start: () => ChildProcess; port: number }> {
  const [client, peer] = [await freePort("127.0.0.1"), await freePort("127.0.0.1")];
  const start = () =>
    spawn(
      "etcd",
      [
        "--data-dir",
        path.join(dir, "data"),
        "--listen-client-urls",
        `http://127.0.0.1:${client}`,
        "--advertise-client-urls",
        `http://127.0.0.1:${client}`,
        "--listen-peer-urls",
        `http://127.0.0.1:${peer}`,
        "--initial-advertise-peer-urls",
        `http://127.0.0.1:${peer}`,
        "--initial-cluster",
        `default=http://127.0.0.1:${peer}`,
      ],
      { stdio: "ignore" },
    );
  return { url: `http://127.0.0.1:${client}`, start, port: client };
}

async function stopEtcd(etcd: ChildProcess | null): Promise<void> {
  if (!etcd) return;
  etcd.kill("SIGCONT");
  etcd.kill("SIGKILL");
  await waitExit(etcd).catch(() => undefined);
}

describe("etcd slow or away", () => {
  it("etcd paused (SIGSTOP) after a call succeeded: the next read and write fail UNAVAILABLE near the deadline, and succeed again once etcd runs", async (t) => {
    if (!canRun({ tools: ["etcd"] }, t.task.name)) return t.skip();
    const dir = fs.mkdtempSync(path.join(os.tmpdir(), "keelson-etcd-deadline-"));
    const plan = await etcdPlan(dir);
    const etcd = plan.start();
    const store = EtcdMetadataStore.connect(plan.url);
    try {
      await waitForPort("127.0.0.1", plan.port, 20_000);
      await store.put(refs.epoch("db"), 1);
      etcd.kill("SIGSTOP");
      for (const call of [() => store.get(refs.epoch("db")), () => store.put(refs.epoch("db"), 2)]) {
        const started = Date.now();
        const error = await call().then(
          () => null,
          (e: unknown) => e,
        );
        const tookMs = Date.now() - started;
        console.log(`etcd paused: a call failed after ${tookMs} ms (deadline ${ETCD_CALL_DEADLINE_MS} ms per attempt)`);
        expect(error).toBeInstanceOf(KeelsonError);
        expect((error as KeelsonError).code).toBe("UNAVAILABLE");
        // Generous: not stuck (the bound is the deadline, not how fast this machine is).
        expect(tookMs).toBeLessThan(ETCD_CALL_DEADLINE_MS + 5_000);
      }
      etcd.kill("SIGCONT");
      expect((await store.get(refs.epoch("db")))?.value).toBeGreaterThanOrEqual(1);
    } finally {
      store.close();
      await stopEtcd(etcd);
      fs.rmSync(dir, { recursive: true, force: true });
    }
  }, 90_000);

  it("a node that starts 3 s before etcd joins once etcd is up, instead of failing its start", async (t) => {
    if (!canRun({ tools: ["etcd"] }, t.task.name)) return t.skip();
    const dir = fs.mkdtempSync(path.join(os.tmpdir(), "keelson-etcd-late-"));
    const plan = await etcdPlan(dir);
    let etcd: ChildProcess | null = null;
    const started = Date.now();
    const joining = ClusterMembership.join({
      endpoints: plan.url,
      peers: new PeerDialer(),
      node: {
        nodeId: "early",
        controlAddress: "127.0.0.1:1",
        nbdAddress: "",
        storageAddress: "127.0.0.1",
        zone: "",
        version: "test",
      },
    });
    // Observed before the join retried: it failed at once, while etcd was still to come.
    const outcome = joining.then(
      (m) => ({ m, error: null }),
      (error: unknown) => ({ m: null, error }),
    );
    let membership: ClusterMembership | null = null;
    try {
      await new Promise((resolve) => setTimeout(resolve, 3_000));
      etcd = plan.start();
      const { m, error } = await outcome;
      membership = m;
      expect(error).toBeNull();
      console.log(`node joined ${Date.now() - started} ms after it started (etcd started after 3000 ms)`);
      const nodes = await (m as ClusterMembership).nodes();
      expect(nodes.map((n) => [n.nodeId, n.alive])).toEqual([["early", true]]);
    } finally {
      const late = membership ?? (await outcome).m;
      await late?.close();
      await stopEtcd(etcd);
      fs.rmSync(dir, { recursive: true, force: true });
    }
  }, 90_000);
});
