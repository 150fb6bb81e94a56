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
