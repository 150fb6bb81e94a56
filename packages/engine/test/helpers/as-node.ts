import { execFile } from "node:child_process";
import fs from "node:fs";
import os from "node:os";
import path from "node:path";
import { fileURLToPath } from "node:url";
import { promisify } from "node:util";
import { DEFAULT_REPLICA_PORT } from "../../src/daemon/engine.js";
import type { StartedLocalCluster } from "../../src/local-cluster/local-cluster.js";

const run = promisify(execFile);
const SCRIPT = path.join(path.dirname(fileURLToPath(import.meta.url)), "replica-write.mjs");

/** Where node `i` of a local cluster serves its replicas. */
export function replicaAddressOf(cluster: StartedLocalCluster, i: number): string {
  const node = cluster.nodes[i];
  if (!node) throw new Error(`no node ${i}`);
  return `${node.address}:${DEFAULT_REPLICA_PORT}`;
}

/**
 * Writes `data` at `offset` into node `target`'s replica `exportName` as node `from` would (run inside its
 * network namespace, so the replica knows it by its address): what a frontend that died mid-fan-out left.
 */
export async function writeReplicaAsNode(
  cluster: StartedLocalCluster,
  from: number,
  target: number,
  exportName: string,
  offset: number,
  data: Buffer,
): Promise<void> {
  const netns = cluster.nodes[from]?.netns;
  if (!netns) throw new Error(`node ${from} has no network namespace: writing as it needs netns isolation`);
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), "keelson-as-node-"));
  try {
    const file = path.join(dir, "data");
    fs.writeFileSync(file, data);
    const args = [SCRIPT, replicaAddressOf(cluster, target), exportName, String(offset), file];
    await run("ip", ["netns", "exec", netns, process.execPath, ...args], { timeout: 20_000 });
  } finally {
    fs.rmSync(dir, { recursive: true, force: true });
  }
}
