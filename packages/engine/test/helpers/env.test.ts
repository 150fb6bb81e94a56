import { describe, expect, it, vi } from "vitest";
import { canRun, isCiValue } from "./env.js";

const NO_SUCH_TOOL = "keelson-test-no-such-tool";

describe("isCiValue: which CI values make a skip a failure", () => {
  it.each([
    ["true", true],
    ["1", true],
    ["yes", true],
    ["TRUE", true],
    ["github-actions", true],
    [undefined, false],
    ["", false],
    ["  ", false],
    ["false", false],
    ["FALSE", false],
    ["0", false],
    ["no", false],
  ])("CI=%j -> %s", (value, expected) => {
    expect(isCiValue(value)).toBe(expected);
  });
});

describe("canRun", () => {
  it("under CI a missing tool throws, naming the test and the tool", () => {
    expect(() => canRun({ tools: ["sh", NO_SUCH_TOOL] }, "a test", true)).toThrow(
      new RegExp(`"a test" needs ${NO_SUCH_TOOL}; CI=.* does not allow skipping it`),
    );
  });

  it("outside CI a missing tool returns false and warns", () => {
    const warn = vi.spyOn(console, "warn").mockImplementation(() => undefined);
    try {
      expect(canRun({ tools: [NO_SUCH_TOOL] }, "a test", false)).toBe(false);
      expect(warn).toHaveBeenCalledWith(expect.stringContaining(`SKIPPED: "a test" needs ${NO_SUCH_TOOL}`));
    } finally {
      warn.mockRestore();
    }
  });

  it("present tools: true, also under CI", () => {
    expect(canRun({ tools: ["sh"] }, "a test", true)).toBe(true);
  });
});
