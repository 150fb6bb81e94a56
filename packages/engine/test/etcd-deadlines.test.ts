// Every unary etcd call has a deadline: an etcd that stops answering after
// the connection was made (paused here with SIGSTOP) fails the call with a
// typed error instead of hanging it, and everything queued behind it.
import { type ChildProcess, spawn } from "node:child_process";
import fs from "node:fs";
import os from "node:os";
import path from "node:path";
import { KeelsonError } from "@keelson/sdk";
import { describe, expect, it } from "vitest";
import { freePort, waitForPort } from "../src/local-cluster/local-process.js";
import { ETCD_CALL_DEADLINE_MS, EtcdMetadataStore } from "../src/metadata/etcd-store.js";
import { refs } from "../src/metadata/index.js";
import { canRun } from "./helpers/env.js";
import { waitExit } from "./helpers/process.js";

describe("etcd call deadlines", () => {
  it("etcd paused (SIGSTOP) after a call succeeded: the next read and write fail UNAVAILABLE near the deadline, and succeed again once etcd runs", async (t) => {
    if (!canRun({ tools: ["etcd"] }, t.task.name)) return t.skip();
    const dir = fs.mkdtempSync(path.join(os.tmpdir(), "keelson-etcd-deadline-"));
    const [client, peer] = [await freePort("127.0.0.1"), await freePort("127.0.0.1")];
    const etcd: ChildProcess = spawn(
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
    const store = EtcdMetadataStore.connect(`http://127.0.0.1:${client}`);
    try {
      await waitForPort("127.0.0.1", client, 20_000);
      await store.put(refs.epoch("db"), 1);
      etcd.kill("SIGSTOP");
      for (const call of [() => store.get(refs.epoch("db")), () => store.put(refs.epoch("db"), 2)]) {
        const started = Date.now();
        const error = await call().then(
          () => null,
          (e: unknown) => e,
        );
        const tookMs = Date.now() - started;
        console.log(`etcd paused: a call failed after ${tookMs} ms (deadline ${ETCD_CALL_DEADLINE_MS} ms)`);
        expect(error).toBeInstanceOf(KeelsonError);
        expect((error as KeelsonError).code).toBe("UNAVAILABLE");
        // Generous: not stuck (the bound is the deadline, not how fast this machine is).
        expect(tookMs).toBeLessThan(ETCD_CALL_DEADLINE_MS * 2 + 3_000);
      }
      etcd.kill("SIGCONT");
      expect((await store.get(refs.epoch("db")))?.value).toBeGreaterThanOrEqual(1);
    } finally {
      store.close();
      etcd.kill("SIGCONT");
      etcd.kill("SIGKILL");
      await waitExit(etcd).catch(() => undefined);
      fs.rmSync(dir, { recursive: true, force: true });
    }
  }, 60_000);
});
