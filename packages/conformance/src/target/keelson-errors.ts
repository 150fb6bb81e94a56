// Keelson's typed errors, converted to the suite's at the local target's edge.

import { isKeelsonError } from "@keelson/sdk";
import { ConformanceError, type ConformanceErrorCode, isConformanceError } from "../errors.js";

/** Runs a keelson call; any failure becomes a ConformanceError naming the operation. */
export async function keelsonCall<T>(what: string, call: () => Promise<T>): Promise<T> {
  try {
    return await call();
  } catch (error) {
    if (isConformanceError(error)) throw error;
    let code: ConformanceErrorCode = "TARGET_FAILED";
    if (isKeelsonError(error)) {
      if (error.code === "VOLUME_NOT_FOUND" || error.code === "SNAPSHOT_NOT_FOUND" || error.code === "NODE_NOT_FOUND") {
        code = "NOT_FOUND";
      } else if (error.code === "QOS_ADMISSION_DENIED") code = "ADMISSION_DENIED";
      else if (error.code === "CANCELLED") code = "CANCELLED";
    }
    const detail = isKeelsonError(error) ? `${error.code}: ${error.message}` : (error as Error).message;
    throw new ConformanceError({ code, message: `${what}: ${detail}`, cause: error });
  }
}

/** Longest a call refused as UNAVAILABLE is retried, as a provisioner retries (a node's liveness blinks, a leader changes). */
export const RETRY_UNAVAILABLE_MS = 20_000;
const RETRY_PAUSE_MS = 500;

/**
 * Runs an idempotent keelson call, retrying it while keelson answers
 * UNAVAILABLE (its retryable "try again" code), for at most `forMs`; any
 * other failure, or UNAVAILABLE after that, ends it as {@link keelsonCall} does.
 */
export async function keelsonCallRetrying<T>(what: string, call: () => Promise<T>, forMs = RETRY_UNAVAILABLE_MS): Promise<T> {
  const deadline = Date.now() + forMs;
  return keelsonCall(what, async () => {
    for (;;) {
      try {
        return await call();
      } catch (error) {
        if (!isKeelsonError(error, "UNAVAILABLE") || Date.now() + RETRY_PAUSE_MS > deadline) throw error;
        await new Promise((resolve) => setTimeout(resolve, RETRY_PAUSE_MS));
      }
    }
  });
}
