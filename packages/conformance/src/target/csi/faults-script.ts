// The vendor's fault script for the csi target: CSI itself cannot kill, cut or slow a node, so
// whoever runs the suite against their driver says how, in one executable. Verbs (argv):
//   capabilities                  print the faults (and `replication`) it can do, one per line
//   kill-storage-process NODE     SIGKILL the storage process of NODE; it stays down until restore
//   kill-serving-node VOLUME_ID   kill the node serving the volume; print that node's id
//   partition NODE                cut NODE off the network; it keeps running
//   slow-disk NODE MS             add MS to every I/O of NODE's disk (0 removes it)
//   restore NODE                  undo every fault on NODE; exit once it serves again
//   replicas VOLUME_ID            print "NODE STATE" per replica (healthy|faulted|rebuilding)
// Exit 0 means done; anything else fails the step with the script's own words.

import { ConformanceError } from "../../errors.js";
import { exec } from "../../host/exec.js";
import type { Capability } from "../target.js";

/** Longest one verb may run: a restore waits for a node to serve again. */
const SCRIPT_TIMEOUT_MS = 180_000;

/** What the script may declare, and the capability each stands for. */
const DECLARABLE: Readonly<Record<string, Capability>> = {
  "kill-storage-process": "fault-kill-storage-process",
  "kill-serving-node": "fault-kill-serving-node",
  partition: "fault-partition-node",
  "slow-disk": "fault-slow-disk",
  replication: "replication",
};

export type ReplicaState = "healthy" | "faulted" | "rebuilding" | "unknown";

export class FaultsScript {
  readonly path: string;
  readonly capabilities: ReadonlySet<Capability>;
  /** True when the script answers `replicas`. */
  readonly listsReplicas: boolean;

  private constructor(path: string, capabilities: Set<Capability>, listsReplicas: boolean) {
    this.path = path;
    this.capabilities = capabilities;
    this.listsReplicas = listsReplicas;
  }

  /** Asks the script what it can do; INVALID_ARGUMENT naming the line it does not understand. */
  static async load(path: string): Promise<FaultsScript> {
    const out = await runScript(path, ["capabilities"]);
    const caps = new Set<Capability>();
    let listsReplicas = false;
    for (const raw of out.split("\n")) {
      const line = raw.trim();
      if (line === "") continue;
      if (line === "replicas") {
        listsReplicas = true;
        continue;
      }
      const cap = DECLARABLE[line];
      if (!cap) {
        throw new ConformanceError({
          code: "INVALID_ARGUMENT",
          message: `--faults-script ${path}: capabilities printed ${JSON.stringify(line)}; known: ${[...Object.keys(DECLARABLE), "replicas"].join(", ")}`,
        });
      }
      caps.add(cap);
    }
    return new FaultsScript(path, caps, listsReplicas);
  }

  async killStorageProcess(nodeId: string): Promise<void> {
    await runScript(this.path, ["kill-storage-process", nodeId]);
  }

  /** Kills the node serving `volumeId`; resolves with the id the script printed. */
  async killServingNode(volumeId: string): Promise<string> {
    const nodeId = (await runScript(this.path, ["kill-serving-node", volumeId])).trim().split("\n").pop()?.trim() ?? "";
    if (nodeId === "") {
      throw new ConformanceError({ code: "TARGET_FAILED", message: `${this.path} kill-serving-node printed no node id` });
    }
    return nodeId;
  }

  async partition(nodeId: string): Promise<void> {
    await runScript(this.path, ["partition", nodeId]);
  }

  async slowDisk(nodeId: string, latencyMs: number): Promise<void> {
    await runScript(this.path, ["slow-disk", nodeId, String(latencyMs)]);
  }

  async restore(nodeId: string): Promise<void> {
    await runScript(this.path, ["restore", nodeId]);
  }

  /** Each replica of `volumeId` and its state, as the script prints them. */
  async replicas(volumeId: string): Promise<{ nodeId: string; state: ReplicaState }[]> {
    const out = await runScript(this.path, ["replicas", volumeId]);
    const states = new Set<string>(["healthy", "faulted", "rebuilding"]);
    return out
      .split("\n")
      .map((l) => l.trim().split(/\s+/))
      .filter((f) => f[0])
      .map(([nodeId, state]) => ({
        nodeId: nodeId as string,
        state: states.has(state ?? "") ? (state as ReplicaState) : "unknown",
      }));
  }
}

async function runScript(path: string, args: string[]): Promise<string> {
  try {
    return (await exec(path, args, { timeoutMs: SCRIPT_TIMEOUT_MS })).stdout;
  } catch (error) {
    throw new ConformanceError({
      code: "TARGET_FAILED",
      message: `faults script: ${(error as Error).message}`,
      cause: error,
    });
  }
}
