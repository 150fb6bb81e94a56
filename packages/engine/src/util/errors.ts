/**
 * The human-readable message of anything thrown: an Error's message, a string as is, anything
 * else through `String(...)`. Catch clauses see `unknown`; casting to Error and reading `.message`
 * gives `undefined` (printed as "undefined") when something other than an Error was thrown.
 */
export function messageOf(error: unknown): string {
  if (error instanceof Error) return error.message;
  if (typeof error === "string") return error;
  return String(error);
}
