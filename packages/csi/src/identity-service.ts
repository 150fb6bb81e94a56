import type { UntypedServiceImplementation } from "@grpc/grpc-js";
import type { KeelsonClient } from "@keelson/sdk";
import { csiUnary } from "./csi-errors.js";

/** The driver's name, as StorageClasses' `provisioner` and CSIDriver objects name it. */
export const DRIVER_NAME = "csi.keelson.io";

/** What the Identity service answers from. */
export interface IdentityOptions {
  /** The driver's version (`vendor_version`). */
  version: string;
  /** Whether this process serves the Controller service (`--mode controller` or `all`). */
  controller: boolean;
  /** The engine's control API: Probe is ready only while it answers. */
  engine: Pick<KeelsonClient, "getNode">;
  /** Longest a Probe waits for the engine (kubelet's livenessprobe allows a few seconds). */
  probeTimeoutMs?: number;
}

const DEFAULT_PROBE_TIMEOUT_MS = 2_000;

/**
 * The CSI Identity service: the plugin's name and version, what it can do (the Controller service and
 * topology when it runs one; offline expansion: an nbdfuse device grows when staged again), and Probe, which is not ready while the engine cannot be
 * reached (a driver that cannot reach its storage must not be taken for healthy).
 */
export function identityService(o: IdentityOptions): UntypedServiceImplementation {
  return {
    GetPluginInfo: csiUnary(async () => ({ name: DRIVER_NAME, vendor_version: o.version, manifest: {} })),
    GetPluginCapabilities: csiUnary(async () => ({
      capabilities: [
        ...(o.controller
          ? [{ service: { type: "CONTROLLER_SERVICE" } }, { service: { type: "VOLUME_ACCESSIBILITY_CONSTRAINTS" } }]
          : []),
        { volume_expansion: { type: "OFFLINE" } },
      ],
    })),
    Probe: csiUnary(async () => {
      const ready = await o.engine.getNode({ timeoutMs: o.probeTimeoutMs ?? DEFAULT_PROBE_TIMEOUT_MS }).then(
        () => true,
        () => false,
      );
      return { ready: { value: ready } };
    }),
  };
}
