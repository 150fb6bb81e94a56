import { describe, expect, it } from "vitest";
import { parseRegressionBound } from "./bound.js";

describe("parseRegressionBound", () => {
  it.each([
    ["10%", 10],
    ["10", 10],
    ["2.5%", 2.5],
    [" 0% ", 0],
    ["1000%", 1000],
  ])("%j -> %d", (text, value) => {
    expect(parseRegressionBound(text)).toBe(value);
  });

  it.each(["", "%", "ten", "-5%", "10%%", "1e3", "10 %x", "1001%", ".5"])("%j: INVALID_ARGUMENT naming it", (text) => {
    expect(() => parseRegressionBound(text)).toThrow(
      expect.objectContaining({
        code: "INVALID_ARGUMENT",
        message: expect.stringContaining(`invalid regression bound ${JSON.stringify(text)}`),
      }),
    );
  });
});
