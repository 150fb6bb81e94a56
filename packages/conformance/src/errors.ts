// The conformance package's one error class and its stable codes.

/** Stable codes of {@link ConformanceError}; the CLI maps them to exit codes and messages. */
export const CONFORMANCE_ERROR_CODES = {
  INVALID_ARGUMENT: "A flag, profile or report field is malformed or out of range.",
  NOT_SUPPORTED: "The target does not have the capability the call needs.",
  NOT_FOUND: "The volume, snapshot or node does not exist on the target.",
  ADMISSION_DENIED: "The target refused a volume because its QoS reservation does not fit any disk.",
  TARGET_FAILED: "The target refused or failed an operation the suite asked of it.",
  TOOL_FAILED: "An external tool (fio, mkfs, nbdfuse, chromium) failed; the message has its output.",
  TOOL_MISSING: "An external tool the run needs is not installed.",
  SCHEMA_INVALID: "A report does not validate against the report schema.",
  CANCELLED: "The run was interrupted (SIGINT or SIGTERM) and cleaned up.",
  INTERNAL: "An unexpected failure in the suite itself.",
} as const;

export type ConformanceErrorCode = keyof typeof CONFORMANCE_ERROR_CODES;

/** Options of a {@link ConformanceError}. */
export interface ConformanceErrorOptions {
  code: ConformanceErrorCode;
  message: string;
  cause?: unknown;
}

/** Every failure the package reports: a stable code plus a message that names the bad value. */
export class ConformanceError extends Error {
  readonly code: ConformanceErrorCode;

  constructor(options: ConformanceErrorOptions) {
    super(options.message, options.cause === undefined ? undefined : { cause: options.cause });
    this.name = "ConformanceError";
    this.code = options.code;
  }
}

export function isConformanceError(error: unknown): error is ConformanceError {
  return error instanceof ConformanceError;
}

/** The message of anything thrown: an Error's message, anything else through `String(...)`. */
export function messageOf(error: unknown): string {
  return error instanceof Error ? error.message : String(error);
}
