import { KeelsonError } from "@keelson/sdk";
import { describe, expect, it } from "vitest";
import { messageOf } from "./errors.js";

describe("messageOf", () => {
  it("gives an Error's message, a KeelsonError's included", () => {
    expect(messageOf(new Error("disk gone"))).toBe("disk gone");
    expect(messageOf(new KeelsonError({ code: "INTERNAL", message: "broken" }))).toBe("broken");
    expect(messageOf(new Error(""))).toBe("");
  });

  it("gives a thrown string as is and anything else through String()", () => {
    expect(messageOf("plain")).toBe("plain");
    expect(messageOf(42)).toBe("42");
    expect(messageOf(undefined)).toBe("undefined");
    expect(messageOf(null)).toBe("null");
    expect(messageOf({ toString: () => "custom" })).toBe("custom");
  });
});
