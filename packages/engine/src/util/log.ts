/** Severity of a log line. */
export type LogLevel = "debug" | "info" | "warn" | "error";

/** Structured JSON logger of the daemon: one object per line on stderr. */
export interface Logger {
  log(level: LogLevel, msg: string, fields?: Record<string, unknown>): void;
}

/** Writes JSON lines to `stream` (stderr by default). */
export function jsonLogger(component: string, stream: NodeJS.WritableStream = process.stderr): Logger {
  return {
    log(level, msg, fields) {
      stream.write(`${JSON.stringify({ time: new Date().toISOString(), level, component, msg, ...fields })}\n`);
    },
  };
}
