import { describe, expect, it } from "vitest";
import { waitFor } from "./wait.js";

describe("waitFor", () => {
  it("resolves with the first answer that is not undefined, null or false, checking again meanwhile", async () => {
    let calls = 0;
    const got = await waitFor(() => (++calls >= 3 ? { calls } : undefined), {
      what: "three calls",
      timeoutMs: 5_000,
      intervalMs: 1,
    });
    expect(got).toEqual({ calls: 3 });
  });

  it("0 and an empty string are answers (only undefined, null and false mean not yet)", async () => {
    expect(await waitFor(() => 0, { what: "zero", timeoutMs: 100 })).toBe(0);
    expect(await waitFor(async () => "", { what: "empty", timeoutMs: 100 })).toBe("");
  });

  it("a check that throws is retried; past the timeout the error names what was awaited and the last failure", async () => {
    const started = Date.now();
    await expect(
      waitFor(
        () => {
          throw new Error("not there yet");
        },
        { what: "node3 in sync", timeoutMs: 120, intervalMs: 10 },
      ),
    ).rejects.toThrow(/gave up after \d+ ms waiting for node3 in sync \(last attempt failed: not there yet\)/);
    expect(Date.now() - started).toBeGreaterThanOrEqual(120);
  });

  it("false until the timeout: rejects, saying the last answer", async () => {
    await expect(waitFor(() => false, { what: "never", timeoutMs: 30, intervalMs: 5 })).rejects.toThrow(
      /waiting for never \(last answer false\)/,
    );
  });
});
