import { KeelsonError } from "@keelson/sdk";
import type { ReadTracker } from "./read-tracker.js";
import type { ChainView } from "./volume.js";

// What the read and the write paths share: the completion of a request made
// of parts, and the errors they report.

/** Completion of a volume I/O; `error` is null on success. */
export type IoCallback = (error: KeelsonError | null) => void;

export function ioError(error: NodeJS.ErrnoException, what: string): KeelsonError {
  const code = error.code === "ENOSPC" || error.code === "EDQUOT" ? "NO_SPACE" : "INTERNAL";
  return new KeelsonError({ code, message: `${what} failed: ${error.message}`, cause: error });
}

export function checkRange(volume: ChainView, offset: number, length: number): KeelsonError | null {
  if (volume.deleted) return new KeelsonError({ code: "VOLUME_NOT_FOUND", message: `volume ${volume.name} was deleted` });
  if (offset < 0 || length < 0 || offset + length > volume.sizeBytes) {
    return new KeelsonError({
      code: "OUT_OF_RANGE",
      message: `request [${offset}, ${offset + length}) reaches past the end of volume ${volume.name} (${volume.sizeBytes} bytes)`,
    });
  }
  return null;
}

/** Counts outstanding parts of one request and completes it once. */
export class Completion {
  pending = 1;
  error: KeelsonError | null = null;
  readonly callback: IoCallback;
  /** For reads: the pool's read tracker that counts this read, and the tracker's era. */
  tracked: ReadTracker | null = null;
  era = 0;

  constructor(callback: IoCallback) {
    this.callback = callback;
  }

  done(error: KeelsonError | null): void {
    if (error && !this.error) this.error = error;
    if (--this.pending !== 0) return;
    if (this.tracked) this.tracked.end(this.era);
    this.callback(this.error);
  }
}
