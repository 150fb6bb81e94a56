// Builds the target a run asks for. `local` is here; `csi`, `kind` and
// `kubeconfig` map onto the same interface (see the package README).

import { ConformanceError } from "../errors.js";
import { startLocalTarget } from "./local.js";
import type { Target } from "./target.js";

export const TARGET_KINDS = ["local", "csi", "kind", "kubeconfig"] as const;
export type TargetKind = (typeof TARGET_KINDS)[number];

/** Options of {@link createTarget}. */
export interface CreateTargetOptions {
  kind: TargetKind;
  /** Nodes of a local cluster. */
  nodes: number;
  /** Scratch directory of the target (removed by its close()). */
  dir: string;
  isolation?: "netns" | "loopback";
}

export async function createTarget(options: CreateTargetOptions): Promise<Target> {
  if (options.kind === "local") {
    return startLocalTarget({
      nodes: options.nodes,
      dir: options.dir,
      ...(options.isolation ? { isolation: options.isolation } : {}),
    });
  }
  throw new ConformanceError({
    code: "NOT_SUPPORTED",
    message: `target ${options.kind} is not built yet (only local is); the package README says how it maps onto the target interface`,
  });
}
