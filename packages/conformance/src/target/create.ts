// Builds the target a run asks for: `local` (a keelson cluster here) or `csi` (any CSI driver on
// this host); `kind` and `kubeconfig` map onto the same interface (see the package README).

import { ConformanceError } from "../errors.js";
import { type CsiTargetOptions, startCsiTarget } from "./csi/csi-target.js";
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
  /** The `csi` target's driver socket, parameters and faults script. */
  csi?: Omit<CsiTargetOptions, "dir">;
}

export async function createTarget(options: CreateTargetOptions): Promise<Target> {
  if (options.kind === "local") {
    return startLocalTarget({
      nodes: options.nodes,
      dir: options.dir,
      ...(options.isolation ? { isolation: options.isolation } : {}),
    });
  }
  if (options.kind === "csi") {
    if (!options.csi?.endpoint) {
      throw new ConformanceError({ code: "INVALID_ARGUMENT", message: "--target csi needs --endpoint unix:///path/csi.sock" });
    }
    return startCsiTarget({ ...options.csi, dir: options.dir });
  }
  throw new ConformanceError({
    code: "NOT_SUPPORTED",
    message: `target ${options.kind} is not built yet (local and csi are); the package README says how it maps onto the target interface`,
  });
}
